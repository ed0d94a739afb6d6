"""The main window: wires the image list, canvas and tools, instance and category panels, status
bar, the model thread and the menus together. Each of those owns its job; this file only connects
them and holds the actions (menus and shortcuts)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtCore import QByteArray, QSettings, Qt
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (QApplication, QDockWidget, QFileDialog, QInputDialog, QMainWindow,
                               QMessageBox, QProgressDialog, QToolBar, QWidget)

from model.errors import InputError
from annotator.gui.background import run_in_background
from annotator.gui.canvas import Canvas
from annotator.gui.category_panel import CategoryPanel
from annotator.gui.garbage import collect_on_the_ui_thread
from annotator.gui.help_dialog import HelpDialog
from annotator.gui.image_list import ImageListPanel
from annotator.gui.instance_list import InstanceListPanel
from annotator.gui.model_picker import DownloadProgressDialog
from annotator.gui.project_files import create_folder_project, project_path_for_folder, scan_folder
from annotator.gui.proposals import ModelChoice, PredictorLike, ProposalResult, ProposalService
from annotator.gui.pyramid import ImagePyramid, build_pyramid
from annotator.gui.session import Session
from annotator.gui.status_bar import StatusBar
from annotator.gui.tools.base import Tool
from annotator.gui.tools.box import BoxTool
from annotator.gui.tools.brush import BrushTool, EraserTool
from annotator.gui.tools.click import ClickTool
from annotator.gui.tools.keypoints import KeypointTool
from annotator.gui.tools.polygon import PolygonTool
from annotator.gui.tools.select import SelectTool
from annotator.proposals import ProposalCategories
from annotator.store import Project, ReviewState, Source

MAX_RECENT = 10
# what "mark done and next" moves on to: images nobody has reviewed yet
TO_REVIEW = (ReviewState.UNLABELED, ReviewState.PROPOSED)


def app_settings() -> QSettings:
    return QSettings("maskrcnn-annotator", "annotator")


class MainWindow(QMainWindow):
    def __init__(self, predictor_factory: Callable[[ModelChoice, str], PredictorLike] | None = None,
                 settings: QSettings | None = None) -> None:
        super().__init__()
        collect_on_the_ui_thread()  # the model thread and the thread pool run Python too (annotator.gui.garbage)
        self.setWindowTitle("Mask R-CNN annotator")
        self.settings = settings or app_settings()
        self.session: Session | None = None
        self._load_generation = 0  # drops image decodes that finish after the user moved on
        # auto-propose: the image its running job is for (0: none runs), whether that job has
        # started in the model thread (a cancel before that is lost), whether it already ran for
        # the image as now opened
        self._auto_image, self._auto_started, self._auto_ran_here = 0, False, False
        self._drop_results_until_idle = False  # a job of the project opened before this one
        self._loading: tuple[ModelChoice, str] | None = None  # the model choice being loaded, and device
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

        self.proposals = ProposalService(predictor_factory, self) if predictor_factory else ProposalService(parent=self)
        self.proposals.paths = self._image_path
        self.proposals.result.connect(self._on_proposals)
        self.proposals.progress.connect(self.status.set_progress)
        self.proposals.failed.connect(lambda text: self._error("Model", text))
        self.proposals.model_failed.connect(self._on_model_failed)
        self.proposals.model_loaded.connect(self._on_model_loaded)
        self.proposals.load_cancelled.connect(self._on_model_load_cancelled)
        self.downloads = DownloadProgressDialog(self.proposals, self)
        self.proposals.status.connect(lambda text: self.status.showMessage(text, 4000))
        self.proposals.busy_changed.connect(self._on_model_busy)
        self.proposals.progress.connect(self._on_model_progress)
        self.status.cancel_button.clicked.connect(self.cancel_model_job)

        session_source = lambda: self.session  # noqa: E731
        self.tools: dict[str, Tool] = {
            "select": SelectTool(self.canvas, session_source),
            "click": ClickTool(self.canvas, session_source, self.proposals),
            "brush": BrushTool(self.canvas, session_source),
            "eraser": EraserTool(self.canvas, session_source),
            "polygon": PolygonTool(self.canvas, session_source),
            "box": BoxTool(self.canvas, session_source, self.proposals),
            "keypoints": KeypointTool(self.canvas, session_source),
        }
        for tool in self.tools.values():
            tool.message.connect(lambda text: self.status.showMessage(text, 5000))
        self.canvas.cursor_moved.connect(self._on_cursor)
        self.canvas.zoom_changed.connect(self.status.set_zoom)
        self.images.image_activated.connect(self.show_image)
        self.instances.accept_requested.connect(self.accept_selected)
        self.instances.reject_requested.connect(self.delete_selected)
        self.instances.accept_all_requested.connect(self.accept_all_above_threshold)

        self.actions_by_name: dict[str, QAction] = {}
        self._build_actions()
        self.set_tool("select")
        self._restore_settings()
        self._update_enabled()

    # -- construction ---------------------------------------------------------------------------

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock-{title.lower()}")
        dock.setWidget(widget)
        widget.setMinimumWidth(250 if area == Qt.DockWidgetArea.LeftDockWidgetArea else 300)
        self.addDockWidget(area, dock)
        return dock

    def _action(self, name: str, text: str, slot: Callable, shortcut: str | list[str] = "",
                menu=None, tip: str = "") -> QAction:
        action = QAction(text, self)
        shortcuts = [shortcut] if isinstance(shortcut, str) else shortcut
        action.setShortcuts([QKeySequence(s) for s in shortcuts if s])
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        if tip:
            action.setStatusTip(tip)
        action.triggered.connect(lambda checked=False: slot())
        self.addAction(action)
        if menu is not None:
            menu.addAction(action)
        self.actions_by_name[name] = action
        return action

    def _build_actions(self) -> None:
        bar = self.menuBar()
        file = bar.addMenu("&File")
        self._action("open_folder", "Open &folder…", self.choose_folder, "Ctrl+O", file)
        self._action("open_project", "Open &project…", self.choose_project, "Ctrl+Shift+O", file)
        self.recent_menu = file.addMenu("Open &recent")
        file.addSeparator()
        self._action("import_coco", "Import COCO JSON…", self.import_coco, "", file)
        self._action("import_labelme", "Import labelme folder…", self.import_labelme, "", file)
        self._action("export_coco", "Export COCO JSON…", lambda: self.export_coco(False), "Ctrl+E", file)
        self._action("export_done", "Export done images as COCO JSON…", lambda: self.export_coco(True), "", file)
        file.addSeparator()
        self._action("quit", "&Quit", self.close, "Ctrl+Q", file)

        edit = bar.addMenu("&Edit")
        self._action("undo", "&Undo", self.undo, "Ctrl+Z", edit)
        self._action("redo", "&Redo", self.redo, ["Ctrl+Shift+Z", "Ctrl+Y"], edit)
        edit.addSeparator()
        self._action("change_category", "Change &category…", self.change_category, "C", edit)
        self._action("merge", "&Merge selected", self.merge_selected, "Ctrl+G", edit)
        self._action("split", "&Split into parts", self.split_selected, "Ctrl+Shift+G", edit)
        self._action("delete", "&Delete / reject selected", self.delete_selected, ["Delete", "Backspace"], edit)
        self._action("brush_bigger", "Brush bigger", lambda: self._brush_size(1), ["+", "="], edit)
        self._action("brush_smaller", "Brush smaller", lambda: self._brush_size(-1), "-", edit)

        view = bar.addMenu("&View")
        self._action("fit", "&Fit image", self.canvas.fit, "F", view)
        self._action("zoom_1to1", "Zoom &1:1", self.canvas.zoom_1to1, "1", view)
        self._action("zoom_in", "Zoom in", lambda: self.canvas.zoom_by(1.25), "Ctrl++", view)
        self._action("zoom_out", "Zoom out", lambda: self.canvas.zoom_by(0.8), "Ctrl+-", view)
        view.addSeparator()
        for dock in self.findChildren(QDockWidget):
            view.addAction(dock.toggleViewAction())

        tools_menu = bar.addMenu("&Tools")
        toolbar = QToolBar("Tools")
        toolbar.setObjectName("toolbar-tools")
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, toolbar)
        group = QActionGroup(self)
        for name, tool in self.tools.items():
            action = self._action(f"tool_{name}", tool.label, lambda n=name: self.set_tool(n), tool.shortcut,
                                  tools_menu, tool.status_tip)
            action.setCheckable(True)
            action.setToolTip(f"{tool.label} ({tool.shortcut})\n{tool.status_tip}")
            group.addAction(action)
            toolbar.addAction(action)

        review = bar.addMenu("&Review")
        self._action("prev_image", "&Previous image", lambda: self.step_image(-1), "A", review)
        self._action("next_image", "&Next image", lambda: self.step_image(1), "D", review)
        self._action("accept", "&Accept selected proposals", self.accept_selected, ["Return", "Enter"], review)
        self._action("accept_all", "Accept all above the threshold", self.accept_all_above_threshold, "Shift+Return",
                     review)
        self._action("done_next", "Mark &done and go to the next unlabeled image", self.mark_done_and_next,
                     "Space", review)
        self._action("mark_in_review", "Mark in review", lambda: self._set_state(ReviewState.IN_REVIEW), "", review)

        model = bar.addMenu("&Model")
        self._action("choose_model", "Choose &model…", self.choose_model, "Ctrl+M", model)
        self._action("propose", "&Propose for this image", self.propose_current, "Ctrl+P", model)
        self._action("propose_all", "Propose for &all unlabeled images", self.propose_all, "Ctrl+Shift+P", model)
        auto = self._action("auto_propose", "A&uto-propose on opening an unlabeled image", self._on_auto_toggled,
                            "", model, "Runs the model on each image you open that is unlabeled and has no "
                            "instances yet")
        auto.setCheckable(True)
        auto.setChecked(self.settings.value("model/auto_propose", False, type=bool))
        self._action("cancel", "&Cancel (drawing, or the model's job)",
                     lambda: self._offer_key(Qt.Key.Key_Escape) or self.cancel_model_job(), "Escape", model)
        model.addSeparator()
        self._action("fine_tune", "&Fine-tune on done images…", self.fine_tune, "", model)
        toolbar.addSeparator()
        # short words on the toolbar (the whole of it fits a 1100-pixel window); menus keep the long ones
        for name, short in (("propose", "Propose"), ("propose_all", "Propose all"), ("done_next", "Done, next")):
            action = self.actions_by_name[name]
            action.setIconText(short)
            action.setToolTip(f"{action.text().replace('&', '')} ({action.shortcut().toString()})")
            toolbar.addAction(action)

        help_menu = bar.addMenu("&Help")
        self._action("help", "&Keyboard shortcuts", self.show_help, ["F1", "?"], help_menu)
        self._rebuild_recent_menu()

    # -- settings -------------------------------------------------------------------------------

    def _restore_settings(self) -> None:
        geometry = self.settings.value("window/geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        else:
            self.resize(1400, 880)
        state = self.settings.value("window/state")
        if isinstance(state, QByteArray):
            self.restoreState(state)

    def _save_settings(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        if self.session is not None:
            self.settings.setValue("view/threshold", self.session.score_threshold)
        self.settings.sync()

    def recent_projects(self) -> list[str]:
        value = self.settings.value("recent/projects", [])
        return [value] if isinstance(value, str) else list(value or [])

    def _remember(self, path: Path) -> None:
        recent = [str(path.resolve())] + [p for p in self.recent_projects() if p != str(path.resolve())]
        self.settings.setValue("recent/projects", recent[:MAX_RECENT])
        self._rebuild_recent_menu()

    def _rebuild_recent_menu(self) -> None:
        self.recent_menu.clear()
        for path in self.recent_projects():
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda checked=False, p=path: self._open_recent(Path(p)))
        self.recent_menu.setEnabled(bool(self.recent_projects()))

    def _open_recent(self, path: Path) -> None:
        if not path.exists():  # deleted or moved since: it leaves the menu, as editors do
            self.settings.setValue("recent/projects", [p for p in self.recent_projects() if p != str(path)])
            self._rebuild_recent_menu()
            self._error("Open", f"{path}: not there any more; removed from the recent projects")
            return
        self.open_path(path)

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
                    self._scan_and_create(path)
            else:
                project = Project.open(path)
                self._locate_moved_images(project)
                self.set_project(project)
        except InputError as error:
            self._error("Open", str(error))

    def _locate_moved_images(self, project: Project) -> None:
        """A project whose image folder is not where it was: offer to point it at the new place
        (a folder that holds the project's first image), as the project is opened."""
        first = next(project.iter_images(), None)
        if first is None or project.image_root.is_dir():
            return
        answer = QMessageBox.question(
            self, "Images not found",
            f"The images of {project.path.name} are not in {project.image_root} any more.\n\n"
            "Locate their folder?")
        if answer != QMessageBox.StandardButton.Yes:
            return
        folder = QFileDialog.getExistingDirectory(self, f"The folder that now holds {first.file_name}",
                                                  str(project.path.parent))
        if not folder:
            return
        if not (Path(folder) / first.file_name).is_file():
            self._error("Images not found", f"{folder} does not hold {first.file_name}; the project is unchanged")
            return
        project.set_image_root(folder)
        self.status.showMessage(f"Images now read from {project.image_root}", 6000)

    def _scan_and_create(self, folder: Path) -> None:
        dialog = QProgressDialog(f"Reading the images in {folder}…", "", 0, 0, self)
        dialog.setCancelButton(None)
        dialog.setWindowModality(Qt.WindowModality.WindowModal)
        dialog.setMinimumDuration(300)

        def done(result) -> None:
            dialog.close()
            found, warnings = result
            try:
                self.set_project(create_folder_project(folder, found))
            except InputError as error:
                self._error("Open", str(error))
                return
            if warnings:
                self._error("Some images were left out", "\n".join(warnings[:20]))

        def failed(message: str) -> None:
            dialog.close()
            self._error("Open", message)

        run_in_background(lambda: scan_folder(folder), done, failed)

    def set_project(self, project: Project) -> None:
        # results of a job still running are for the previous project's images: ids that this
        # project may use for others
        self._drop_results_until_idle = self.proposals.busy
        if self._auto_image and self._auto_started:
            self.proposals.cancel()
        self._auto_image = 0
        if self.session is not None:
            self.session.project.close()
            self.session.deleteLater()
        self.session = Session(project, self)
        threshold = self.settings.value("view/threshold")
        if threshold is not None:
            self.session.score_threshold = float(threshold)
        self.session.instances_changed.connect(lambda _: self._update_enabled())
        self.session.selection_changed.connect(lambda _: self._on_selection())
        self.session.history_changed.connect(self._update_enabled)
        self.session.image_changed.connect(self._load_image)
        self.session.image_changed.connect(self._on_image_opened)
        for panel in (self.images, self.instances, self.categories):
            panel.set_session(self.session)
        self.canvas.set_session(self.session)
        self._remember(project.path)
        self.setWindowTitle(f"{project.path.name} — Mask R-CNN annotator")
        first = next(iter(project.iter_images()), None)
        if first is not None:
            self.show_image(first.id)
        self._update_enabled()

    def _image_path(self, image_id: int) -> str:
        return str(self.session.project.image_path(self.session.project.image(image_id))) if self.session else ""

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
        return (self.session is not None and self.canvas.pyramid is not None
                and self.canvas.pyramid is self.pyramid and self._load_generation > 0
                and self.pyramid.width == self.session.image.width)

    # -- navigation and review ------------------------------------------------------------------

    def step_image(self, step: int) -> None:
        ids = self.images.visible_ids()
        if self.session is None or not ids:
            return
        current = ids.index(self.session.image_id) if self.session.image_id in ids else -1
        target = max(0, min(len(ids) - 1, current + step))
        self.show_image(ids[target])

    def mark_done_and_next(self) -> None:
        """Done means the image holds what the user sees: proposals at or above the score threshold
        are accepted, those under it (hidden) are discarded, so an export of done images never
        carries unreviewed low-score guesses. Locked instances are left as they are."""
        session = self.session
        if session is None or not session.image_id:
            return
        pending = [i for i in session.instances() if i.source == Source.MODEL and i.id not in session.locked]
        below = [i.id for i in pending if not session.passes_threshold(i)]
        above = [i.id for i in pending if session.passes_threshold(i)]
        if below:
            session.history.delete(below, f"Discard {len(below)} proposals under the threshold")
        if above:
            session.history.accept(above, f"Accept {len(above)} proposals")
        session.set_review_state(session.image_id, ReviewState.DONE)
        ids = [r.id for r in session.project.iter_images() if r.state in TO_REVIEW]
        later = [i for i in ids if i > session.image_id] or ids
        if later:
            self.show_image(later[0])
        else:
            self.status.showMessage("Every image is reviewed", 5000)

    def _set_state(self, state: ReviewState) -> None:
        if self.session is not None and self.session.image_id:
            self.session.set_review_state(self.session.image_id, state)

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

    def _brush_size(self, steps: int) -> None:
        tool = self.canvas.tool if isinstance(self.canvas.tool, BrushTool) else self.tools["brush"]
        tool.grow(steps)

    def undo(self) -> None:
        if self.session is not None:
            command = self.session.undo()
            if command is not None:
                self.status.showMessage(f"Undid: {command.text}", 3000)

    def redo(self) -> None:
        if self.session is not None:
            command = self.session.redo()
            if command is not None:
                self.status.showMessage(f"Redid: {command.text}", 3000)

    def _editable_selection(self) -> list[int]:
        session = self.session
        if session is None:
            return []
        return [i for i in session.selection if session.project.id_in_use("instances", i) and i not in session.locked]

    def delete_selected(self) -> None:
        if self._offer_key(Qt.Key.Key_Backspace):  # the polygon tool drops its last vertex
            return
        ids = self._editable_selection()
        if ids:
            proposals = all(self.session.project.instance(i).source == Source.MODEL for i in ids)
            self.session.history.delete(ids, "Reject" if proposals else "Delete")
            self.session.mark_in_review()

    def accept_selected(self) -> None:
        if self._offer_key(Qt.Key.Key_Return):
            return
        ids = self._editable_selection()
        if ids:
            self.session.history.accept(ids)
            self.session.mark_in_review()

    def accept_all_above_threshold(self) -> None:
        session = self.session
        if session is None:
            return
        ids = [i.id for i in session.instances() if i.source == Source.MODEL and i.id not in session.hidden
               and i.id not in session.locked and session.passes_threshold(i)]
        if ids:
            session.history.accept(ids, f"Accept {len(ids)} proposals")
            session.mark_in_review()

    def change_category(self) -> None:
        session = self.session
        ids = self._editable_selection()
        if not ids:
            self.status.showMessage("Select instances first", 3000)
            return
        categories = session.project.categories()
        names = [c.name for c in categories]
        current = session.project.instance(ids[0]).category_id
        index = next((n for n, c in enumerate(categories) if c.id == current), 0)
        name, ok = QInputDialog.getItem(self, "Change category", "Category", names, index, False)
        if ok:
            self.set_category_of_selection(categories[names.index(name)].id)

    def set_category_of_selection(self, category_id: int) -> None:
        session = self.session
        ids = self._editable_selection()
        if not ids:
            return
        project = session.project
        changes = []
        from annotator.commands import Change

        with project.transaction():
            for instance_id in ids:
                before = project.instance(instance_id)
                if before.category_id != category_id:
                    changes.append(Change(before, project.update_instance(instance_id, category_id=category_id)))
        if changes:
            session.history.record("Change category", session.image_id, changes)
            session.mark_in_review()

    def merge_selected(self) -> None:
        ids = self._editable_selection()
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
        ids = self._editable_selection()
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

    # -- model ----------------------------------------------------------------------------------

    def load_model(self, choice: ModelChoice, device: str = "auto") -> None:
        self._loading = (choice, device)  # remembered in the settings once it has loaded
        self.status.set_model(f"loading {choice.title}…", device)
        self.proposals.load(choice, device)

    def restore_model(self) -> bool:
        """Loads the model that last loaded (kept in the settings), as labelme and CVAT users
        expect of a desktop tool; not a file that has gone since. Registry weights loaded before
        are in torch's cache, so this downloads nothing unless the cache was emptied."""
        kind, name = self.settings.value("model/kind"), self.settings.value("model/name")
        if kind not in ("registry", "file", "run") or not name:
            return False
        if kind != "registry" and not Path(name).is_file():
            return False
        label = self.settings.value("model/label", "") or ""
        self.load_model(ModelChoice(kind, name, label), self.settings.value("model/device", "auto") or "auto")
        return True

    def choose_model(self) -> None:
        from annotator.gui.model_picker import ModelPickerDialog

        dialog = ModelPickerDialog(self.session.project.path if self.session else None, self)
        if dialog.exec():
            choice, device = dialog.selection()
            if choice is not None:
                self.load_model(choice, device)

    def _on_model_loaded(self, version: str, device: str) -> None:
        collect_on_the_ui_thread().freeze()  # the model and torch's modules stay: keep full collections cheap
        if self._loading is not None:
            choice, requested = self._loading
            for key, value in (("kind", choice.kind), ("name", choice.name), ("label", choice.label),
                               ("device", requested)):
                self.settings.setValue(f"model/{key}", value)
            self._loading = None
        self.status.set_model(version, device)
        self.status.showMessage(f"Model ready: {version} on {device}", 5000)
        self._update_enabled()

    def _on_model_failed(self, message: str) -> None:
        self._on_model_load_cancelled()
        self._error("Model", message)

    def _on_model_load_cancelled(self) -> None:
        self._loading = None  # the model in use, if any, stays; so does the remembered choice
        self.status.set_model(self.proposals.model_version, self.proposals.device)

    def _on_model_busy(self, busy: bool) -> None:
        if not busy:
            self.status.set_progress(0, 0)
            self._auto_image, self._auto_started = 0, False
            self._drop_results_until_idle = False
        self._update_enabled()
        if not busy:
            self.auto_propose()

    def cancel_model_job(self) -> None:
        if self.proposals.busy:
            self._auto_ran_here = True  # the user stopped the model: no auto-propose here until reopened
        self.proposals.cancel()

    # -- auto-propose: the model runs on each unlabeled image as it is opened ---------------------

    def _on_auto_toggled(self) -> None:
        checked = self.actions_by_name["auto_propose"].isChecked()
        self.settings.setValue("model/auto_propose", checked)
        if checked:
            self._auto_ran_here = False
            self.auto_propose()

    def _on_image_opened(self, image_id: int) -> None:
        self._auto_ran_here = False
        if self._auto_image and self._auto_image != image_id and self._auto_started:
            self.proposals.cancel()  # the user moved on; the image now open gets the next job
        self.auto_propose()

    def _on_model_progress(self, done: int, total: int) -> None:
        if self._auto_image and not self._auto_started:
            self._auto_started = True
            if self.session is None or self._auto_image != self.session.image_id:
                self.proposals.cancel()  # left before the job started

    def auto_propose(self) -> None:
        """Proposes for the current image when auto-propose is on, a model is loaded and free,
        and the image is unlabeled with no instances; once each time the image is opened. A
        job for an image the user has left is cancelled, so at most one runs and the image
        in view comes next."""
        session = self.session
        if (not self.actions_by_name["auto_propose"].isChecked() or session is None or not session.image_id
                or self._auto_ran_here or not self.proposals.has_model or self.proposals.busy):
            return
        if session.image.state != ReviewState.UNLABELED or session.instances():
            return
        if self.proposals.propose([session.image_id]):
            self._auto_image, self._auto_started, self._auto_ran_here = session.image_id, False, True

    def propose_current(self) -> None:
        if self.session is None or not self.session.image_id:
            return
        if not self.proposals.has_model:
            self._error("Model", "No model is loaded: choose one in Model → Choose model")
            return
        self.proposals.propose([self.session.image_id])

    def propose_all(self) -> None:
        if self.session is None:
            return
        if not self.proposals.has_model:
            self._error("Model", "No model is loaded: choose one in Model → Choose model")
            return
        ids = [r.id for r in self.session.project.iter_images(ReviewState.UNLABELED)]
        if not ids:
            self.status.showMessage("No unlabeled images left", 4000)
            return
        self.status.set_progress(0, len(ids))
        self.proposals.propose(ids)

    def _on_proposals(self, result: ProposalResult) -> None:
        session = self.session
        if (session is None or self._drop_results_until_idle
                or not session.project.id_in_use("images", result.image_id)):
            return
        categories = ProposalCategories(session.project, result.keypoint_names, result.keypoint_skeleton)
        if result.prompt == "image":
            if session.project.image(result.image_id).state in (ReviewState.IN_REVIEW, ReviewState.DONE):
                return  # someone reviewed it meanwhile: proposals would replace nothing a person kept
            session.history.add_proposals(result.image_id, result.proposals, result.model_version,
                                          category_for=categories)
            if result.image_id == session.image_id:
                self.status.showMessage(f"{len(result.proposals)} proposals", 4000)
            return
        if not result.proposals:
            self.status.showMessage("The model found nothing there", 4000)
            return
        category = session.ensure_category()
        proposals = result.proposals
        if result.prompt == "box":
            for proposal in proposals:  # the box was drawn for the current category, by a person:
                proposal.label_name = category.name
                proposal.score = None  # the class score of a drawn box is no detection score
        text = "Box to mask" if result.prompt == "box" else "Click to segment"
        added = session.history.add_proposals(
            result.image_id, proposals, result.model_version, replace=False,
            source=Source.HUMAN if result.prompt == "box" else Source.MODEL, text=text, category_for=categories)
        if added and result.image_id == session.image_id:
            session.select([added[0].id])
            if result.prompt == "box":
                session.mark_in_review()
            self.status.showMessage(f"{text}: added {session.project.category(added[0].category_id).name}", 4000)

    def fine_tune(self) -> None:
        if self.session is None:
            return
        from annotator.gui.finetune_dialog import FineTuneDialog

        # the model in use comes first: fine-tuning again goes on from the last run, not the demo
        bases = FineTuneDialog.default_bases()
        current = self.settings.value("model/name") if self.proposals.has_model else None
        if current:
            bases = [current] + [base for base in bases if base != current]
        dialog = FineTuneDialog(self.session.project, self, base_weights=bases)
        dialog.model_ready.connect(lambda path: self.load_model(ModelChoice("run", path), self.proposals.device or "auto"))
        dialog.exec()

    # -- import / export ------------------------------------------------------------------------

    def import_coco(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import COCO JSON", "", "COCO JSON (*.json)")
        if path:
            from annotator.coco import import_coco

            self._import(lambda project: import_coco(project, path))

    def import_labelme(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Import a labelme folder")
        if folder:
            from annotator.labelme import import_labelme

            self._import(lambda project: import_labelme(project, folder))

    def _import(self, run: Callable) -> None:
        if self.session is None:
            self._error("Import", "Open a project or a folder of images first")
            return
        try:
            report = run(self.session.project)
        except InputError as error:
            self._error("Import", f"{error}\n\nNothing was imported; the project is unchanged.")
            return
        self.session.history.clear()
        self.session.history_changed.emit()
        self.session.notify_categories()
        self.images.model.reload()
        self.images.update_counts()
        message = report.summary()
        if report.warnings:
            message += "\n\n" + "\n".join(report.warnings[:20])
        QMessageBox.information(self, "Import", message)

    def export_coco(self, only_done: bool) -> None:
        if self.session is None:
            return
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
        unreviewed = (f"; {left_out} proposal{'s were' if left_out > 1 else ' was'} left out (nobody accepted "
                      f"{'them' if left_out > 1 else 'it'})" if left_out else "")
        self.status.showMessage(f"Wrote {counts['images']} images and {counts['annotations']} annotations "
                                f"to {path}{unreviewed}", 10000)
        return counts

    # -- misc -----------------------------------------------------------------------------------

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
        names = ("import_coco", "import_labelme", "export_coco", "export_done", "done_next", "prev_image",
                 "next_image", "fine_tune", "mark_in_review")
        for name in names:
            self.actions_by_name[name].setEnabled(has_project)
        model_free = has_project and not self.proposals.busy
        self.actions_by_name["propose"].setEnabled(model_free)
        self.actions_by_name["propose_all"].setEnabled(model_free)
        history = self.session.history if self.session else None
        undo, redo = self.actions_by_name["undo"], self.actions_by_name["redo"]
        can_undo = history is not None and history.can_undo
        can_redo = history is not None and history.can_redo
        undo.setEnabled(can_undo)
        redo.setEnabled(can_redo)
        undo.setText(f"&Undo {history.undo_text}" if can_undo else "&Undo")
        redo.setText(f"&Redo {history.redo_text}" if can_redo else "&Redo")

    def _error(self, title: str, text: str) -> None:
        self.status.showMessage(text.splitlines()[0] if text else title, 8000)
        if QApplication.platformName() == "offscreen" or getattr(self, "quiet_errors", False):
            self.last_error = text  # tests read it; a modal box would wait for a click
            return
        QMessageBox.warning(self, title, text)

    def closeEvent(self, event: QCloseEvent) -> None:
        self._save_settings()
        self.proposals.shutdown()
        if self.session is not None:
            session, self.session = self.session, None
            for panel in (self.images, self.instances, self.categories):
                panel.set_session(None)
            self.canvas.set_session(None)
            session.project.close()
        super().closeEvent(event)
