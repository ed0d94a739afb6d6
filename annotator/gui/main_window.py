"""The main window: wires the image list, canvas and tools, instance and category panels, status
bar, the model (annotator.gui.model_control) and the menus (declared in annotator.gui.actions)
together. Each of those owns its job, and the rules they follow are Qt-free (annotator.review,
annotator.prompts, annotator.auto_propose); this file only connects them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, Qt
from PySide6.QtGui import QAction, QCloseEvent, QKeyEvent
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QInputDialog,
    QMainWindow,
    QMessageBox,
    QToolBar,
    QWidget,
)

from annotator.gui import unavailable
from annotator.gui.actions import build_actions
from annotator.gui.activity import ActivityMeter
from annotator.gui.background import run_in_background
from annotator.gui.canvas import Canvas
from annotator.gui.category_panel import CategoryPanel
from annotator.gui.exports import FolderExports
from annotator.gui.first_run import FirstRun
from annotator.gui.folder_control import FolderControl
from annotator.gui.garbage import collect_on_the_ui_thread
from annotator.gui.help_dialog import HelpDialog
from annotator.gui.image_list import ImageListPanel
from annotator.gui.instance_list import InstanceListPanel
from annotator.gui.learning import LearningControl
from annotator.gui.model_control import ModelControl
from annotator.gui.project_watch import ProjectWatch
from annotator.gui.proposals import ModelChoice, PredictorLike
from annotator.gui.pyramid import ImagePyramid, build_pyramid
from annotator.gui.read_only import ReadOnlyView
from annotator.gui.recent import RecentProjects
from annotator.gui.session import Session
from annotator.gui.statistics import StatisticsDialog
from annotator.gui.status_bar import StatusBar
from annotator.gui.tools.base import Tool
from annotator.gui.tools.box import BoxTool
from annotator.gui.tools.brush import BrushTool, EraserTool
from annotator.gui.tools.click import ClickTool
from annotator.gui.tools.keypoints import KeypointTool
from annotator.gui.tools.outline import OutlineTool
from annotator.gui.tools.polygon import PolygonTool
from annotator.gui.tools.select import SelectTool
from annotator.gui.unavailable import DisabledShortcuts
from annotator.image_folder import project_path_for_folder
from annotator.importing import import_source
from annotator.store import Project, ReviewState, Source
from annotator.wording import counted
from model.errors import InputError


def app_settings() -> QSettings:
    return QSettings("maskrcnn-annotator", "annotator")


class MainWindow(QMainWindow):
    def __init__(
        self,
        predictor_factory: Callable[[ModelChoice, str], PredictorLike] | None = None,
        settings: QSettings | None = None,
    ) -> None:
        super().__init__()
        collect_on_the_ui_thread()  # the model thread and the thread pool run Python too (annotator.gui.garbage)
        self.setWindowTitle("Mask R-CNN annotator")
        self.settings = settings or app_settings()
        self.session: Session | None = None
        self._load_generation = 0  # drops image decodes that finish after the user moved on
        self.pyramid: ImagePyramid | None = None

        self.canvas = Canvas()
        self.setCentralWidget(self.canvas)
        self.images = ImageListPanel()
        self.instances = InstanceListPanel()
        self.categories = CategoryPanel()
        self._dock("Images", self.images, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._dock("Instances", self.instances, Qt.DockWidgetArea.RightDockWidgetArea)
        self._dock("Categories", self.categories, Qt.DockWidgetArea.RightDockWidgetArea)
        self.status = StatusBar()
        self.setStatusBar(self.status)

        session_source = lambda: self.session  # noqa: E731
        self.model_control = ModelControl(self, self.status, self.settings, session_source, predictor_factory)
        self.proposals = self.model_control.service  # the model thread: the tools ask it too
        self.model_control.error.connect(self._error)
        self.model_control.state_changed.connect(self._update_enabled)
        self.first_run = FirstRun(self, self.settings, self.model_control)  # which model, asked once
        self.tools: dict[str, Tool] = {
            "select": SelectTool(self.canvas, session_source),
            "click": ClickTool(self.canvas, session_source, self.proposals),
            "brush": BrushTool(self.canvas, session_source),
            "eraser": EraserTool(self.canvas, session_source),
            "polygon": PolygonTool(self.canvas, session_source),
            "box": BoxTool(self.canvas, session_source, self.proposals),
            "keypoints": KeypointTool(self.canvas, session_source),
            "outline": OutlineTool(self.canvas, session_source),
        }
        for tool in self.tools.values():
            tool.message.connect(lambda text: self.status.showMessage(text, 5000))
        self.learning = LearningControl(self, self.status, self.settings, session_source, self.model_control)
        self.folder = FolderControl(self, self.status, self.images, session_source)
        self.folder.error.connect(self._error)
        self.exports = FolderExports(self, self.status, session_source)  # File > Export labelme, YOLO
        self.activity = ActivityMeter(self, session_source)  # active seconds per image (annotator.effort)
        self.canvas.cursor_moved.connect(self._on_cursor)
        self.canvas.zoom_changed.connect(self.status.set_zoom)
        self.images.image_activated.connect(self.show_image)
        self.instances.accept_requested.connect(self.accept_selected)
        self.instances.reject_requested.connect(self.delete_selected)
        self.instances.accept_all_requested.connect(self.accept_all_above_threshold)
        self.categories.status_message.connect(lambda text: self.status.showMessage(text, 8000))

        self.recent = RecentProjects(self, self.settings, self.open_path, self._error)
        self.recent_menu = self.recent.menu
        toolbar = QToolBar("Tools")
        toolbar.setObjectName("toolbar-tools")
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, toolbar)
        self.actions_by_name: dict[str, QAction] = build_actions(self, toolbar)
        auto = self.actions_by_name["auto_propose"]
        auto.setChecked(self.model_control.auto.enabled)
        auto.toggled.connect(self.model_control.auto.set_enabled)  # also when the demo checks it
        self.actions_by_name["learn"].setChecked(self.learning.enabled)
        self.actions_by_name["learn"].toggled.connect(self.learning.set_enabled)
        self.set_tool("select")
        self.watch = ProjectWatch(self)  # another program's changes to the project (issue 17)
        self.disabled_shortcuts = DisabledShortcuts(self)  # a greyed action's key says why (issue 16)
        self.read_only = ReadOnlyView(self)  # a project that cannot be written
        self._restore_settings()
        self._update_enabled()

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock-{title.lower()}")
        dock.setWidget(widget)
        widget.setMinimumWidth(250 if area == Qt.DockWidgetArea.LeftDockWidgetArea else 300)
        self.addDockWidget(area, dock)
        return dock

    # -- settings -------------------------------------------------------------------------------

    def _restore_settings(self) -> None:
        geometry = self.settings.value("window/geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        else:  # 1400 x 880 where the screen has room; a laptop's 1280 x 800 gets all of it, frame aside
            room = self.screen().availableGeometry()
            self.resize(min(1400, room.width() - 20), min(880, room.height() - 60))
        state = self.settings.value("window/state")
        if isinstance(state, QByteArray):
            self.restoreState(state)

    def _save_settings(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self._save_threshold()
        self.settings.sync()

    def _threshold_key(self, project: Project) -> str:
        """The score threshold is kept per project (a 1.00 saved in one hid every proposal of the next)."""
        return "view/threshold/" + hashlib.sha1(str(project.path.resolve()).encode()).hexdigest()[:16]

    def _save_threshold(self) -> None:
        if self.session is not None:
            self.settings.setValue(self._threshold_key(self.session.project), self.session.view.score_threshold)

    def recent_projects(self) -> list[str]:
        return self.recent.paths()

    # -- opening --------------------------------------------------------------------------------

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of images")
        if folder:
            self.open_path(Path(folder))

    def choose_project(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a project", "", "Projects (*.annot);;All files (*)")
        if path:
            self.open_path(Path(path))

    def open_path(self, path: Path) -> None:
        """Opens a project file, or a folder of images (creating its project on first opening)."""
        try:
            if path.is_dir():
                project_file = project_path_for_folder(path)
                if project_file.exists():
                    self.set_project(Project.open(project_file))
                else:
                    self.folder.create_project(path, self.set_project)
            else:
                project = Project.open(path)
                self.folder.locate_moved_images(project)
                self.set_project(project)
        except InputError as error:
            self._error("Open", str(error))

    def set_project(self, project: Project) -> None:
        self.model_control.project_changing()
        self.activity.release()
        self._save_threshold()
        if self.session is not None:
            self.session.project.close()
            self.session.deleteLater()
        self.session = Session(project, self)
        threshold = self.settings.value(self._threshold_key(project))
        if threshold is not None:
            self.session.view.score_threshold = float(threshold)
        self.session.instances_changed.connect(lambda _: self._update_enabled())
        self.session.selection_changed.connect(lambda _: self._on_selection())
        self.session.history_changed.connect(self._update_enabled)
        self.session.current_category_changed.connect(lambda _: self._show_new_shape_category())
        self.session.categories_changed.connect(self._show_new_shape_category)
        self.session.history_changed.connect(self._show_new_shape_category)  # a kept proposal's category
        self._show_new_shape_category()
        self.session.image_changed.connect(self._load_image)
        self.session.image_changed.connect(self.model_control.on_image_opened)
        for panel in (self.images, self.instances, self.categories):
            panel.set_session(self.session)
        self.learning.project_opened(self.session)
        self.canvas.set_session(self.session)
        self.recent.remember(project.path)
        self.setWindowTitle(f"{project.path.name} — Mask R-CNN annotator")
        self.watch.project_opened(project)
        self.read_only.project_opened(project)
        first = next(iter(project.iter_images()), None)
        if first is not None:
            self.show_image(first.id)
        self._update_enabled()
        self.folder.notice_changes(project)
        self.first_run.project_opened()

    def _show_new_shape_category(self) -> None:
        category = self.session.category_for_new_shapes() if self.session is not None else None
        self.status.set_new_shape_category(category.name if category else "", category.color if category else "")

    def show_image(self, image_id: int) -> None:
        if self.session is not None:
            self.session.set_image(image_id)

    def _load_image(self, image_id: int) -> None:
        """Decodes the image and builds its pyramid on the thread pool; the canvas shows it when
        ready (the previous image stays until then)."""
        self._load_generation += 1
        generation = self._load_generation
        if not image_id:
            self.canvas.set_pyramid(None)
            return
        record = self.session.project.image(image_id)
        path = self.session.project.image_path(record)
        self.status.set_image_size(record.width, record.height)
        self.status.showMessage(f"Loading {record.file_name}…")

        def work() -> ImagePyramid:
            from model.images import read_image

            return build_pyramid(read_image(path))

        def done(pyramid: ImagePyramid) -> None:
            if generation != self._load_generation:
                return
            self.pyramid = pyramid
            self.canvas.set_pyramid(pyramid)
            self.status.showMessage(record.file_name, 3000)
            if isinstance(self.canvas.tool, KeypointTool):
                self.canvas.tool.refresh()

        def failed(message: str) -> None:
            if generation == self._load_generation:
                self.pyramid = None
                self.canvas.set_pyramid(None, f"This image cannot be shown.\n\n{message}")
                self._error("Image", message)

        run_in_background(work, done, failed)

    @property
    def image_ready(self) -> bool:
        """Whether the canvas shows the current image (tests wait for this)."""
        return (
            self.session is not None
            and self.canvas.pyramid is not None
            and self.canvas.pyramid is self.pyramid
            and self._load_generation > 0
            and self.pyramid.width == self.session.image.width
        )

    # -- navigation and review (annotator.review) ------------------------------------------------

    def _say(self, reason: str) -> None:
        """Why an action did nothing, in the status bar (annotator.gui.unavailable)."""
        self.status.showMessage(reason, unavailable.MESSAGE_MS)

    def _image_open(self) -> bool:
        """Whether an image is open to act on; else the status bar says why not."""
        reason = unavailable.no_image(self.session)
        if reason:
            self._say(reason)
        return not reason

    def step_image(self, step: int) -> None:
        ids = self.images.visible_ids()
        if self.session is None or not ids:
            return self._say(unavailable.NO_PROJECT if self.session is None else unavailable.NO_IMAGE_LISTED)
        current = ids.index(self.session.image_id) if self.session.image_id in ids else -1
        target = max(0, min(len(ids) - 1, current + step))
        if ids[target] == self.session.image_id:
            return self._say(f"This is the {'last' if step > 0 else 'first'} image of the list")
        self.show_image(ids[target])

    def mark_done_and_next(self) -> None:
        session = self.session
        if not self._image_open():
            return
        done = session.review.mark_done(session.image_id)
        later = self.images.next_to_review(session.image_id)
        if later:
            self.show_image(later)
        self.status.showMessage(done.summary() + ("" if later else "; every image is reviewed"), 8000)

    def copy_previous_labels(self) -> None:
        if self._image_open():
            self.status.showMessage(self.session.review.copy_previous_labels(self.session.image_id), 8000)

    def set_review_state(self, state: ReviewState) -> None:
        if not self._image_open():
            return
        if self.session.image.state == state:
            return self._say(f"This image is {state.label} already")
        self.session.set_review_state(self.session.image_id, state)

    def accept_selected(self) -> None:
        if self._offer_key(Qt.Key.Key_Return) or not self._image_open():
            return
        ids = self.session.review.editable_selection(self.session.selection)
        if not any(self.session.project.instance(i).source == Source.MODEL for i in ids):
            return self._say(unavailable.NOTHING_TO_ACCEPT if ids else unavailable.nothing_selected(self.session))
        self.session.review.accept(self.session.image_id, ids)

    def delete_selected(self) -> None:
        if self._offer_key(Qt.Key.Key_Backspace) or not self._image_open():  # a polygon drops its last vertex
            return
        if not self.session.review.reject(self.session.image_id, self.session.selection):
            self._say(unavailable.nothing_selected(self.session))

    def accept_all_above_threshold(self) -> None:
        if self._image_open() and not self.session.review.accept_all_shown(self.session.image_id):
            self._say(unavailable.NO_PROPOSALS_SHOWN)

    def change_category(self) -> None:
        session = self.session
        ids = session.review.editable_selection(session.selection) if session else []
        if not ids:
            self.status.showMessage("Select instances first", 3000)
            return
        categories = session.project.kept_categories()  # a category only proposed is not one to choose
        names = [c.name for c in categories]
        current = session.project.instance(ids[0]).category_id
        index = next((n for n, c in enumerate(categories) if c.id == current), 0)
        name, ok = QInputDialog.getItem(self, "Change category", "Category", names, index, False)
        if ok:
            self.set_category_of_selection(categories[names.index(name)].id)

    def set_category_of_selection(self, category_id: int) -> None:
        if self.session is not None:
            self.session.review.set_category(self.session.image_id, self.session.selection, category_id)

    # -- editing --------------------------------------------------------------------------------

    def set_tool(self, name: str) -> None:
        if self.canvas.tool is not None:
            self.canvas.tool.deactivate()
        tool = self.tools[name]
        self.canvas.tool = tool
        tool.activate()
        self.actions_by_name[f"tool_{name}"].setChecked(True)
        self.canvas.update()

    def _offer_key(self, key: Qt.Key) -> bool:
        """Lets the active tool use a key that is also a window shortcut (Enter closes a polygon)."""
        tool = self.canvas.tool
        if tool is None:
            return False
        event = QKeyEvent(QKeyEvent.Type.KeyPress, key, Qt.KeyboardModifier.NoModifier)
        if tool.key(event):
            self.canvas.update()
            return True
        return False

    def cancel(self) -> None:
        """Escape: the active tool's gesture if it has one, else the model's job."""
        if self._offer_key(Qt.Key.Key_Escape):
            return
        if not self.proposals.busy:
            return self._say(unavailable.NOTHING_TO_CANCEL)
        self.model_control.cancel_job()

    def grow_brush(self, steps: int) -> None:
        tool = self.canvas.tool if isinstance(self.canvas.tool, BrushTool) else self.tools["brush"]
        tool.grow(steps)

    def undo(self) -> None:
        self.watch.step_history(forward=False)

    def redo(self) -> None:
        self.watch.step_history(forward=True)

    def merge_selected(self) -> None:
        ids = self.session.review.editable_selection(self.session.selection) if self.session else []
        if len(ids) < 2:
            self.status.showMessage("Select two or more instances to merge (Ctrl+click)", 4000)
            return
        try:
            merged = self.session.history.merge(ids)
        except ValueError as error:
            self._error("Merge", str(error))
            return
        self.session.select([merged.id])
        self.session.mark_in_review()

    def split_selected(self) -> None:
        ids = self.session.review.editable_selection(self.session.selection) if self.session else []
        if len(ids) != 1:
            self.status.showMessage("Select one instance to split", 4000)
            return
        try:
            parts = self.session.history.split(ids[0])
        except ValueError as error:
            self._error("Split", str(error))
            return
        if len(parts) == 1:
            self.status.showMessage("The mask is one connected part; nothing to split", 4000)
        self.session.select([p.id for p in parts])
        self.session.mark_in_review()

    # -- model (annotator.gui.model_control) ----------------------------------------------------

    def load_model(self, choice: ModelChoice, device: str = "auto") -> None:
        self.model_control.load(choice, device)

    def restore_model(self) -> bool:
        """Loads the model that loaded last (:meth:`ModelControl.restore`)."""
        return self.model_control.restore()

    # -- import / export ------------------------------------------------------------------------

    def import_coco(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import COCO JSON", "", "COCO JSON (*.json)")
        if path:
            self._import(Path(path))

    def import_labelme(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Import a labelme folder")
        if folder:
            self._import(Path(folder))

    def _import(self, source: Path) -> None:
        """Imports a COCO file or a labelme folder into the open project, as ``main.py import``
        does (annotator.importing): all or nothing, duplicates of labels already there skipped."""
        if self.session is None:
            self._error("Import", "Open a project or a folder of images first")
            return
        try:
            report = import_source(self.session.project, source)
        except InputError as error:
            self._error("Import", f"{error}\n\nNothing was imported; the project is unchanged.")
            return
        self.session.history.clear()
        self.watch.show_changes()  # as another program's import would be shown
        message = report.summary()
        if report.warnings:
            message += "\n\n" + "\n".join(report.warnings[:20])
        QMessageBox.information(self, "Import", message)

    def export_coco(self, only_done: bool) -> None:
        if self.session is None:
            return self._say(unavailable.NO_PROJECT)
        suggested = str(self.session.project.path.with_suffix(".json"))
        path, _ = QFileDialog.getSaveFileName(self, "Export COCO JSON", suggested, "COCO JSON (*.json)")
        if path:
            self.export_to(Path(path), only_done)

    def export_to(self, path: Path, only_done: bool = False) -> dict | None:
        from annotator.coco import export_coco

        try:
            counts = export_coco(self.session.project, path, only_done=only_done)
        except (InputError, OSError) as error:
            self._error("Export", f"{path}: {getattr(error, 'strerror', None) or error}")
            return None
        left_out = counts["proposals_left_out"]
        unreviewed = (
            f"; {left_out} proposal{'s were' if left_out > 1 else ' was'} left out (nobody accepted "
            f"{'them' if left_out > 1 else 'it'})"
            if left_out
            else ""
        )
        self.status.showMessage(
            f"Wrote {counted(counts['images'], 'image')} and {counted(counts['annotations'], 'annotation')}"
            f" to {path}{unreviewed}",
            10000,
        )
        return counts

    # -- misc -----------------------------------------------------------------------------------

    def show_statistics(self) -> None:
        if self.session is None:
            self._say(unavailable.NO_PROJECT)
        else:
            self.activity.flush()  # the seconds of the image being worked on count too
            StatisticsDialog(self.session.project, self).exec()

    def show_help(self) -> None:
        HelpDialog(list(self.actions_by_name.values()), self).exec()

    def _on_cursor(self, x: float, y: float) -> None:
        if self.pyramid is not None:
            self.status.set_cursor(x, y, self.pyramid.width, self.pyramid.height)

    def _on_selection(self) -> None:
        if isinstance(self.canvas.tool, KeypointTool):
            self.canvas.tool.refresh()
        self._update_enabled()

    def _update_enabled(self) -> None:
        has_project = self.session is not None
        names = (
            "add_images",
            "import_coco",
            "import_labelme",
            "export_coco",
            "export_done",
            *FolderExports.ACTIONS,
            "done_next",
            "prev_image",
            "next_image",
            "fine_tune",
            "mark_in_review",
            "statistics",
        )
        for name in names:
            self.actions_by_name[name].setEnabled(has_project)
        model_free = has_project and not self.proposals.busy
        self.actions_by_name["propose"].setEnabled(model_free)
        self.actions_by_name["propose_all"].setEnabled(model_free)
        self.actions_by_name["refine_boxes"].setEnabled(model_free)
        history = self.session.history if self.session else None
        undo, redo = self.actions_by_name["undo"], self.actions_by_name["redo"]
        can_undo = history is not None and history.can_undo
        can_redo = history is not None and history.can_redo
        undo.setEnabled(can_undo)
        redo.setEnabled(can_redo)
        undo.setText(f"&Undo {history.undo_text}" if can_undo else "&Undo")
        redo.setText(f"&Redo {history.redo_text}" if can_redo else "&Redo")
        self.read_only.restrict()

    def _error(self, title: str, text: str) -> None:
        """The first line in the status bar, the whole text in a warning box."""
        self.status.showMessage(text.splitlines()[0] if text else title, 8000)
        QMessageBox.warning(self, title, text)

    def closeEvent(self, event: QCloseEvent) -> None:
        self._save_settings()
        self.learning.stop()
        self.proposals.shutdown()
        self.activity.stop()
        if self.session is not None:
            session, self.session = self.session, None
            for panel in (self.images, self.instances, self.categories):
                panel.set_session(None)
            self.canvas.set_session(None)
            session.project.close()
        super().closeEvent(event)
