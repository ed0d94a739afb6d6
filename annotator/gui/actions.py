"""The window's menus, toolbar and shortcuts, declared apart from the window, as napari declares
its actions: each action's name, menu text, keys and what it runs, in one table
(:func:`window_menus`). :func:`build_actions` makes the QActions from it; the help dialog lists the
shortcuts from those."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QDockWidget, QMainWindow, QMenu, QToolBar

from annotator.gui.unavailable import when_image_shown
from annotator.store import ReviewState


@dataclass(frozen=True)
class ActionSpec:
    name: str  # its key in MainWindow.actions_by_name
    text: str  # the menu text; & marks the mnemonic
    run: Callable[[], object]
    shortcuts: tuple[str, ...] = ()  # the first is shown in menus and tooltips
    tip: str = ""  # the status bar's line while the pointer is on it
    checkable: bool = False
    group: str = ""  # checkable actions of one group exclude each other


# A menu's items: actions declared here, actions and submenus the window made, or a separator (None).
MenuItem = ActionSpec | QAction | QMenu | None
# After the tools, the toolbar shows these, in short words (the whole of it fits a 1100-pixel
# window); the menus keep the long ones.
TOOLBAR_WORDS = {"propose": "Propose", "propose_all": "Propose all", "done_next": "Done, next"}


def window_menus(w: QMainWindow) -> list[tuple[str, list[MenuItem]]]:
    """The menu bar of ``w`` (annotator.gui.main_window.MainWindow, which imports this module), in
    order: each menu's title and items."""
    tools = [
        ActionSpec(
            f"tool_{name}",
            tool.label,
            lambda n=name: w.set_tool(n),
            (tool.shortcut,),
            tool.status_tip,
            checkable=True,
            group="tools",
        )
        for name, tool in w.tools.items()
    ]
    return [
        ("&File", file_menu(w)),
        (
            "&Edit",
            [
                ActionSpec("undo", "&Undo", w.undo, ("Ctrl+Z",)),
                ActionSpec("redo", "&Redo", w.redo, ("Ctrl+Shift+Z", "Ctrl+Y")),
                None,
                ActionSpec("change_category", "Change &category…", w.change_category, ("C",)),
                ActionSpec("merge", "&Merge selected", w.merge_selected, ("Ctrl+G",)),
                ActionSpec("split", "&Split into parts", w.split_selected, ("Ctrl+Shift+G",)),
                ActionSpec(
                    "copy_previous",
                    "Copy labels from the previous image",
                    w.copy_previous_labels,
                    ("Ctrl+Shift+V",),
                    tip="The labels of the nearest earlier image that has some, as new labels here",
                ),
                ActionSpec("delete", "&Delete / reject selected", w.delete_selected, ("Delete", "Backspace")),
                ActionSpec("brush_bigger", "Brush bigger", lambda: w.grow_brush(1), ("+", "=")),
                ActionSpec("brush_smaller", "Brush smaller", lambda: w.grow_brush(-1), ("-",)),
            ],
        ),
        (
            "&View",
            [
                ActionSpec("fit", "&Fit image", when_image_shown(w, w.canvas.fit), ("F",)),
                ActionSpec("zoom_1to1", "Zoom &1:1", when_image_shown(w, w.canvas.zoom_1to1), ("1",)),
                ActionSpec("zoom_in", "Zoom in", when_image_shown(w, lambda: w.canvas.zoom_by(1.25)), ("Ctrl++",)),
                ActionSpec("zoom_out", "Zoom out", when_image_shown(w, lambda: w.canvas.zoom_by(0.8)), ("Ctrl+-",)),
                None,
                ActionSpec(
                    "hide_overlays",
                    "&Hide labels and proposals",
                    lambda: w.canvas.set_overlays_visible(not w.actions_by_name["hide_overlays"].isChecked()),
                    ("H",),
                    tip="See the image alone; H again shows them",
                    checkable=True,
                ),
                opacity_menu(w),
                None,
                *(dock.toggleViewAction() for dock in w.findChildren(QDockWidget)),
            ],
        ),
        ("&Tools", tools),
        (
            "&Review",
            [
                ActionSpec("prev_image", "&Previous image", lambda: w.step_image(-1), ("A",)),
                ActionSpec("next_image", "&Next image", lambda: w.step_image(1), ("D",)),
                ActionSpec("accept", "&Accept selected proposals", w.accept_selected, ("Return", "Enter")),
                ActionSpec(
                    "accept_all", "Accept all above the threshold", w.accept_all_above_threshold, ("Shift+Return",)
                ),
                ActionSpec(
                    "done_next", "Mark &done and go to the next unlabeled image", w.mark_done_and_next, ("Space",)
                ),
                ActionSpec("mark_in_review", "Mark in review", lambda: w.set_review_state(ReviewState.IN_REVIEW)),
                ActionSpec(
                    "least_sure",
                    "Least sure image &first",
                    lambda: w.images.set_least_sure_first(w.actions_by_name["least_sure"].isChecked()),
                    tip="Sort the proposed images by how unsure the model is, and go to the least sure next",
                    checkable=True,
                ),
                None,
                ActionSpec(
                    "statistics",
                    "&Statistics…",
                    w.show_statistics,
                    tip="What labelling has cost: labels accepted as-is, edits, seconds per image, per model",
                ),
            ],
        ),
        ("&Model", model_menu(w)),
        ("&Help", [ActionSpec("help", "&Keyboard shortcuts", w.show_help, ("F1", "?"))]),
    ]


def opacity_menu(w: QMainWindow) -> QMenu:
    """View > Overlay opacity: how much of the image shows through the masks and outlines."""
    menu = QMenu("Overlay &opacity", w)
    group = QActionGroup(menu)
    for percent in (100, 75, 50, 25):
        action = menu.addAction(f"{percent}%")
        action.setCheckable(True)
        action.setChecked(percent == 100)
        group.addAction(action)
        action.triggered.connect(lambda checked=False, p=percent: w.canvas.set_overlay_opacity(p / 100))
    return menu


def file_menu(w: QMainWindow) -> list[MenuItem]:
    return [
        ActionSpec("open_folder", "Open &folder…", w.choose_folder, ("Ctrl+O",)),
        ActionSpec("open_project", "Open &project…", w.choose_project, ("Ctrl+Shift+O",)),
        w.recent_menu,
        None,
        ActionSpec("add_images", "&Add images…", w.folder.add_images),
        ActionSpec("import_coco", "Import COCO JSON…", w.import_coco),
        ActionSpec("import_labelme", "Import labelme folder…", w.import_labelme),
        ActionSpec("export_coco", "Export COCO JSON…", lambda: w.export_coco(False), ("Ctrl+E",)),
        ActionSpec("export_done", "Export done images as COCO JSON…", lambda: w.export_coco(True)),
        ActionSpec(
            "export_labelme",
            "Export labelme JSON…",
            lambda: w.exports.choose_folder("labelme"),
            tip="A labelme 5 file for each image with labels or marked done, in a folder you choose",
        ),
        ActionSpec(
            "export_yolo",
            "Export YOLO segmentation…",
            lambda: w.exports.choose_folder("yolo"),
            tip="An Ultralytics YOLO segmentation dataset (labels, train.txt, data.yaml) in a folder you choose",
        ),
        None,
        ActionSpec("quit", "&Quit", w.close, ("Ctrl+Q",)),
    ]


def model_menu(w: QMainWindow) -> list[MenuItem]:
    model = w.model_control
    return [
        ActionSpec("choose_model", "Choose &model…", model.choose, ("Ctrl+M",)),
        ActionSpec("propose", "&Propose for this image", model.propose_current, ("Ctrl+P",)),
        ActionSpec("propose_all", "Propose for &all unlabeled images", model.propose_all, ("Ctrl+Shift+P",)),
        ActionSpec(
            "auto_propose",
            "A&uto-propose on opening an unlabeled image",
            model.on_auto_triggered,
            tip="Runs the model on each image you open that is unlabeled and has no instances yet",
            checkable=True,
        ),
        ActionSpec(
            "refine_boxes",
            "&Refine boxes to masks",
            model.refine_selected_boxes,
            ("Ctrl+B",),
            tip="Box to mask on the selected box-only labels (all on this image when none is selected), in place",
        ),
        ActionSpec("cancel", "&Cancel (drawing, or the model's job)", w.cancel, ("Escape",)),
        None,
        ActionSpec("fine_tune", "&Fine-tune on done images…", model.fine_tune),
        ActionSpec(
            "learn",
            "&Learn as I label",
            w.learning.remember,  # the window connects its toggle to LearningControl.set_enabled
            tip="After every few images marked done, fine-tune in the background; use the new model if not worse",
            checkable=True,
        ),
        ActionSpec("learn_size", "Learning round size…", model.choose_round_size),
        ActionSpec("history", "Model &history…", model.show_history),
    ]


def build_actions(window: QMainWindow, toolbar: QToolBar) -> dict[str, QAction]:
    """Makes the menus of :func:`window_menus` in ``window``'s menu bar, every declared action a
    window-wide shortcut; the tools and then :data:`TOOLBAR_WORDS` go on ``toolbar``. Returns the
    declared actions by name."""
    actions: dict[str, QAction] = {}
    groups: dict[str, QActionGroup] = {}
    for title, items in window_menus(window):
        menu = window.menuBar().addMenu(title)
        for item in items:
            if item is None:
                menu.addSeparator()
            elif isinstance(item, QMenu):
                menu.addMenu(item)
            elif isinstance(item, QAction):
                menu.addAction(item)
            else:
                action = actions[item.name] = _action(window, item)
                menu.addAction(action)
                if item.group:
                    groups.setdefault(item.group, QActionGroup(window)).addAction(action)
                    toolbar.addAction(action)
    toolbar.addSeparator()
    for name, word in TOOLBAR_WORDS.items():
        actions[name].setIconText(word)
        toolbar.addAction(actions[name])
    for action in toolbar.actions():
        if not action.isSeparator():
            tip = action.statusTip()
            action.setToolTip(
                f"{action.text().replace('&', '')} ({action.shortcut().toString()})" + (f"\n{tip}" if tip else "")
            )
    return actions


def _action(window: QMainWindow, spec: ActionSpec) -> QAction:
    action = QAction(spec.text, window)
    action.setShortcuts([QKeySequence(s) for s in spec.shortcuts if s])
    action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
    if spec.tip:
        action.setStatusTip(spec.tip)
    action.setCheckable(spec.checkable)
    run = spec.run
    action.triggered.connect(lambda checked=False: run())
    window.addAction(action)
    return action
