"""Box to mask: drag a box; the model segments the object inside (``Predictor.predict_in_box``,
in the model thread) and the result becomes a new instance. Without a model, the box itself
becomes a rectangular mask."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPen

from annotator.gui.canvas import ToolEvent
from annotator.gui.tools.base import Tool

MIN_BOX_SIDE = 2.0  # image pixels


class BoxTool(Tool):
    name = "box"
    label = "Box to mask"
    shortcut = "R"
    status_tip = "Drag a box around an object: the model segments it"

    def __init__(self, canvas, session_source, proposals=None) -> None:
        super().__init__(canvas, session_source)
        self.proposals = proposals  # annotator.gui.proposals.ProposalService
        self._start: QPointF | None = None
        self._end: QPointF | None = None

    def cancel(self) -> None:
        self._start = self._end = None

    def press(self, event: ToolEvent) -> bool:
        if self.session is None or event.button != Qt.MouseButton.LeftButton:
            return False
        self._start = self._end = event.pos
        return True

    def move(self, event: ToolEvent) -> bool:
        if self._start is None:
            return False
        self._end = event.pos
        return True

    def release(self, event: ToolEvent) -> bool:
        if self._start is None or event.button != Qt.MouseButton.LeftButton:
            return False
        self._end = event.pos
        box = self.box()
        self.cancel()
        if box is None:
            return True
        session = self.session
        category = session.ensure_category()
        if self.proposals is not None and self.proposals.has_model:
            self.proposals.segment_box(session.image_id, box, category.name)
            self.message.emit("Segmenting the box...")
        else:
            x1, y1, x2, y2 = box
            added = session.history.add(
                session.image_id, category.id, "Box (no model: rectangle)", polygons=[[x1, y1, x2, y1, x2, y2, x1, y2]]
            )
            session.select([added.id])
            session.mark_in_review()
            self.message.emit("No model loaded: the box became a rectangular mask")
        return True

    def box(self) -> tuple[float, float, float, float] | None:
        """The dragged box ``(x1, y1, x2, y2)`` clipped to the image, or None if too small."""
        if self._start is None or self._end is None:
            return None
        image = self.session.image
        x1, x2 = sorted((self._start.x(), self._end.x()))
        y1, y2 = sorted((self._start.y(), self._end.y()))
        x1, x2 = max(0.0, x1), min(float(image.width), x2)
        y1, y2 = max(0.0, y1), min(float(image.height), y2)
        if x2 - x1 < MIN_BOX_SIDE or y2 - y1 < MIN_BOX_SIDE:
            return None
        return x1, y1, x2, y2

    def paint(self, painter: QPainter) -> None:
        if self._start is None or self._end is None:
            return
        rect = QRectF(self.canvas.image_to_widget(self._start), self.canvas.image_to_widget(self._end)).normalized()
        painter.setBrush(QColor(255, 255, 255, 30))
        painter.setPen(QPen(QColor(0, 0, 0), 3))
        painter.drawRect(rect)
        painter.setPen(QPen(QColor(255, 255, 255), 1.5, Qt.PenStyle.DashLine))
        painter.drawRect(rect)
