"""Select: click an instance to select it (Ctrl adds or removes), drag empty space to pan."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QCursor

from annotator.gui.canvas import ToolEvent
from annotator.gui.tools.base import Tool


class SelectTool(Tool):
    name = "select"
    label = "Select"
    shortcut = "V"
    status_tip = "Click an instance to select it (Ctrl+click: add to the selection); drag to pan"

    @property
    def cursor(self) -> QCursor:
        return QCursor(Qt.CursorShape.ArrowCursor)

    def press(self, event: ToolEvent) -> bool:
        session = self.session
        if session is None or event.button != Qt.MouseButton.LeftButton:
            return False
        hit = self.canvas.instance_at(event.pos)
        if hit is None:
            if not event.modifiers & Qt.KeyboardModifier.ControlModifier:
                session.select([])
            return False  # the canvas pans
        if event.modifiers & Qt.KeyboardModifier.ControlModifier:
            selection = list(session.selection)
            if hit.id in selection:
                selection.remove(hit.id)
            else:
                selection.append(hit.id)
            session.select(selection)
        else:
            session.select([hit.id])
        return True
