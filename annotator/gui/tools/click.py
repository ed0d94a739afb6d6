"""Click to segment: a click inside an object selects the best proposal there; where there is
none, the model is asked for the best mask holding the clicked point."""

from __future__ import annotations

from PySide6.QtCore import Qt

from annotator.gui.canvas import ToolEvent
from annotator.gui.tools.base import Tool
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
        # every proposal of the image counts here, also those under the score threshold
        candidates = [i for i in session.instances()
                      if i.id not in session.hidden and self.canvas.overlay(i).contains(x, y)]
        proposals = [i for i in candidates if i.source == Source.MODEL]
        if proposals:
            best = max(proposals, key=lambda i: i.score or 0.0)
            session.select([best.id])
            self.message.emit(f"Selected the best proposal here (score {best.score or 0:.2f}); Enter accepts")
            return True
        if candidates:
            session.select([min(candidates, key=lambda i: i.area).id])
            return True
        if self.proposals is not None and self.proposals.has_model:
            image = session.image
            if 0 <= x < image.width and 0 <= y < image.height:
                self.proposals.segment_point(session.image_id, (x, y))
                self.message.emit("Asking the model for the object here...")
        else:
            self.message.emit("No proposal here, and no model loaded to ask")
        return True
