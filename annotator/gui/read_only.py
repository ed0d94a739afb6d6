"""A project that can only be read (its file or its folder cannot be written: ``Project.read_only``,
annotator.project_file) shown as a read-only view. The window's title and a note in the status bar
say so and why; the actions, tools and buttons that would write are disabled, and their shortcuts,
pressed anyway, get the one line the store refuses a change with in the status bar; the writers
that run by themselves (active time, proposals, auto-propose) leave the project alone
(annotator.gui.activity, annotator.gui.model_control). Browsing, zooming, hiding the overlays and
exporting (to files elsewhere) keep working."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QAction, QKeyEvent, QKeySequence
from PySide6.QtWidgets import QMainWindow, QPushButton

from annotator.project_file import ProjectReadOnly
from annotator.store import Project

# The window's actions that change the project (annotator.gui.actions), besides the editing tools.
WRITING_ACTIONS = (
    "undo",
    "redo",
    "change_category",
    "merge",
    "split",
    "copy_previous",
    "delete",
    "accept",
    "accept_all",
    "done_next",
    "mark_in_review",
    "add_images",
    "import_coco",
    "import_labelme",
    "propose",
    "propose_all",
    "refine_boxes",
    "fine_tune",  # its runs go beside the project, its model into the project's history
)
# The one tool that only reads: it selects (and the canvas pans).
READING_TOOL = "select"


def why_read_only(path: Path) -> tuple[str, str]:
    """Why a project opened read-only: its file, or else its folder, cannot be written (SQLite
    makes its -wal and -shm files beside the project). A few words for the status bar, where the
    messages need room too, and the whole of it for the tooltip."""
    if not os.access(path, os.W_OK):
        what, where = "the file", f"{path} cannot be written"
    else:
        what, where = "its folder", f"the folder {path.parent} cannot be written (SQLite makes files beside it)"
    return f"{what} cannot be written", f"{where}; copy the project somewhere writable to change it"


class ReadOnlyView(QObject):
    """Keeps ``window`` (annotator.gui.main_window.MainWindow) a read-only view while its project
    can only be read: call :meth:`project_opened` as a project opens and :meth:`restrict` after the
    window enables its actions."""

    def __init__(self, window: QMainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.refusal = ""  # the store's one line for a change asked of the open project; "" when writable
        self._disabled: list[QAction] = []

    @property
    def active(self) -> bool:
        return bool(self.refusal)

    def _writing_actions(self) -> list[QAction]:
        actions = self.window.actions_by_name
        tools = [f"tool_{name}" for name in self.window.tools if name != READING_TOOL]
        return [actions[name] for name in (*WRITING_ACTIONS, *tools)]

    def project_opened(self, project: Project) -> None:
        """Shows ``project`` read-only when it can only be read; a writable one undoes that."""
        try:
            project.check_writable()
            self.refusal = ""
        except ProjectReadOnly as error:
            self.refusal = str(error)
        window = self.window
        window.status.set_read_only_notice(*(why_read_only(project.path) if self.active else ("", "")))
        for watched in (window, window.categories.list.viewport()):  # keys; a double click edits a category
            (watched.installEventFilter if self.active else watched.removeEventFilter)(self)
        if self.active:
            window.setWindowTitle(f"{project.path.name} (read-only) — Mask R-CNN annotator")
            if window.canvas.tool is not window.tools[READING_TOOL]:
                window.set_tool(READING_TOOL)
        else:
            for action in self._disabled:  # the window then disables what its own state calls for
                action.setEnabled(True)
            self._disabled.clear()
        instances = window.instances
        for button in (
            *window.categories.findChildren(QPushButton),  # add, edit, delete
            instances.accept_button,
            instances.reject_button,
            instances.accept_all_button,
        ):
            button.setEnabled(not self.active)
        self.restrict()

    def restrict(self) -> None:
        """Disables the actions that would write, while the project can only be read."""
        if not self.active:
            return
        for action in self._writing_actions():
            if action.isEnabled():
                action.setEnabled(False)
                if action not in self._disabled:
                    self._disabled.append(action)

    def refuse(self) -> None:
        """Says, in the status bar, that the project cannot be changed."""
        self.window.status.showMessage(self.refusal, 8000)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        """Installed while the project can only be read."""
        if event.type() == QEvent.Type.MouseButtonDblClick and watched is not self.window:
            self.refuse()  # not the category dialog, which could only say "not saved"
            return True
        if event.type() == QEvent.Type.KeyPress and watched is self.window and isinstance(event, QKeyEvent):
            pressed = QKeySequence(event.keyCombination())
            for action in self._writing_actions():
                if any(pressed.matches(keys) == QKeySequence.SequenceMatch.ExactMatch for keys in action.shortcuts()):
                    self.refuse()  # a disabled action's shortcut reaches the window as a plain key press
                    return True
        return False
