"""What every canvas tool shares: access to the canvas and session, and the event hooks.

Hooks return True when the tool used the event (the canvas then repaints; an unused left press on
empty space pans the view)."""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QCursor, QKeyEvent, QPainter

from annotator.gui.canvas import Canvas, ToolEvent
from annotator.gui.session import Session


class Tool(QObject):
    name = "tool"
    label = "Tool"
    shortcut = ""
    status_tip = ""
    message = Signal(str)  # a line for the status bar

    def __init__(self, canvas: Canvas, session_source) -> None:
        """``session_source`` returns the current session (or None): projects come and go."""
        super().__init__(canvas)
        self.canvas = canvas
        self._session_source = session_source

    @property
    def session(self) -> Session | None:
        return self._session_source()

    @property
    def cursor(self) -> QCursor:
        return QCursor(Qt.CursorShape.CrossCursor)

    def activate(self) -> None:
        self.canvas.setCursor(self.cursor)
        if self.status_tip:
            self.message.emit(self.status_tip)

    def deactivate(self) -> None:
        self.cancel()

    def cancel(self) -> None:
        """Drops any unfinished gesture."""

    def press(self, event: ToolEvent) -> bool:
        return False

    def move(self, event: ToolEvent) -> bool:
        return False

    def release(self, event: ToolEvent) -> bool:
        return False

    def double_click(self, event: ToolEvent) -> bool:
        return False

    def key(self, event: QKeyEvent) -> bool:
        return False

    def paint(self, painter: QPainter) -> None:
        """Draws the tool's feedback; the painter is in widget coordinates."""

    def target_instance(self):
        """The selected instance if it can be edited."""
        session = self.session
        instance = session.selected if session else None
        if instance is not None and not session.view.editable(instance.id):
            self.message.emit("The selected instance is locked or hidden")
            return None
        return instance
