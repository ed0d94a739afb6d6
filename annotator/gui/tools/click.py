"""Click to segment: a click inside an object selects the best proposal there; where there is
none, the model is asked for the best mask holding the clicked point, else for box to mask with the
current category on a box grown from the click (annotator.prompts)."""

from __future__ import annotations

from PySide6.QtCore import Qt

from annotator.gui.canvas import ToolEvent
from annotator.gui.tools.base import Tool
from annotator.prompts import instance_at_click
from annotator.store import Source


class ClickTool(Tool):
    name = "click"
    label = "Click to segment"
    shortcut = "S"
    status_tip = "Click inside an object: selects the best proposal there, or asks the model for one"

    def __init__(self, canvas, session_source, proposals=None) -> None:
        super().__init__(canvas, session_source)
        self.proposals = proposals

    def press(self, event: ToolEvent) -> bool:
        session = self.session
        if session is None or event.button != Qt.MouseButton.LeftButton:
            return False
        x, y = event.pos.x(), event.pos.y()
        picked = instance_at_click(
            [
                i
                for i in session.instances()
                if i.id not in session.view.hidden and self.canvas.overlay(i).contains(x, y)
            ]
        )
        if picked is not None:
            session.select([picked.id])
            if picked.source == Source.MODEL:
                self.message.emit(f"Selected the best proposal here (score {picked.score or 0:.2f}); Enter accepts")
            return True
        if self.proposals is not None and self.proposals.has_model:
            image = session.image
            if 0 <= x < image.width and 0 <= y < image.height:
                category = session.current_category
                self.proposals.segment_point(session.image_id, (x, y), category.name if category else "")
                self.message.emit("Asking the model for the object here...")
        else:
            self.message.emit("No proposal here, and no model loaded to ask")
        return True
