"""Actions that cannot do anything now say why, in one status-bar line, instead of nothing at all
(issue 16): no project open, no image shown, nothing selected, nothing to undo, the model busy.

Two ways an action ends up doing nothing. An enabled one runs its handler, which finds nothing to
act on and says so with these lines. A disabled one (greyed in its menu: the window disables what
its state calls for) never runs: Qt leaves its shortcut to the widgets, and the key press reaches
the window as a plain key, which :class:`DisabledShortcuts` answers with the reason the action is
disabled. A project that can only be read answers its writing actions' keys itself
(annotator.gui.read_only), before this filter does."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QKeyEvent, QKeySequence
from PySide6.QtWidgets import QMainWindow

from annotator.gui.session import Session

NO_PROJECT = "No project is open: open a folder of images (Ctrl+O) or a project (Ctrl+Shift+O) first"
NO_IMAGE = "No image is shown: pick one in the Images list"
NO_IMAGE_LISTED = "No image is in the list: add images (File → Add images), or show all review states"
NOTHING_SELECTED = "Nothing is selected: click an instance first (Ctrl+click adds more)"
SELECTION_LOCKED = "The selected instances are locked: uncheck Lock in the Instances list first"
NO_BOX_ONLY = "No box-only label to refine: select labels drawn or imported as boxes without a mask"
NOTHING_TO_ACCEPT = "None of the selected instances is a proposal: they are labels already"
NO_PROPOSALS_SHOWN = "No proposal on this image is at or above the threshold: nothing to accept"
NOTHING_TO_UNDO = "Nothing to undo"
NOTHING_TO_REDO = "Nothing to redo"
NOTHING_TO_CANCEL = "Nothing to cancel: no shape is being drawn and the model is not working"
MODEL_BUSY = "The model is busy with another job: wait for it, or press Escape to stop it"
MESSAGE_MS = 5000


def no_image(session: Session | None) -> str:
    """Why there is no image to act on: no project open, or none shown; "" when one is shown."""
    if session is None:
        return NO_PROJECT
    return "" if session.image_id else NO_IMAGE


def nothing_selected(session: Session) -> str:
    """Why the selection gives an action nothing to act on: empty, or all of it locked."""
    return SELECTION_LOCKED if session.selection else NOTHING_SELECTED


class DisabledShortcuts(QObject):
    """Says, in ``window``'s status bar (annotator.gui.main_window.MainWindow), why the action
    whose shortcut was pressed is disabled."""

    def __init__(self, window: QMainWindow) -> None:
        super().__init__(window)
        self.window = window
        window.installEventFilter(self)

    def reason(self, name: str) -> str:
        """Why the action ``name`` of the window's ``actions_by_name`` is disabled now."""
        window = self.window
        session = window.session
        if session is None:
            return NO_PROJECT
        if name == "undo":
            return NOTHING_TO_UNDO
        if name == "redo":
            return NOTHING_TO_REDO
        if name in ("propose", "propose_all", "refine_boxes") and window.proposals.busy:
            return MODEL_BUSY
        return ""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() != QEvent.Type.KeyPress or not isinstance(event, QKeyEvent):
            return False
        pressed = QKeySequence(event.keyCombination())
        for name, action in self.window.actions_by_name.items():
            if action.isEnabled():
                continue
            if any(pressed.matches(keys) == QKeySequence.SequenceMatch.ExactMatch for keys in action.shortcuts()):
                reason = self.reason(name)
                if reason:
                    self.window.status.showMessage(reason, MESSAGE_MS)
                    return True
        return False


def when_image_shown(window: QMainWindow, run: Callable[[], object]) -> Callable[[], None]:
    """``run`` (a view action: fit, zoom) while the canvas shows an image; else the reason."""

    def guarded() -> None:
        if window.canvas.pyramid is None:  # also while the image shown is still being read
            window.status.showMessage(no_image(window.session) or NO_IMAGE, MESSAGE_MS)
        else:
            run()

    return guarded
