"""Polygon: click vertices; close by clicking the first vertex, double-clicking or Enter. The
polygon becomes a new instance of the current category (its mask rasterised as COCO does).
Backspace removes the last vertex, Escape drops the polygon."""

from __future__ import annotations

from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QKeyEvent, QPainter, QPen, QPolygonF

from annotator.gui.canvas import ToolEvent
from annotator.gui.tools.base import Tool

CLOSE_DISTANCE = 8.0  # screen pixels from the first vertex that close the polygon


class PolygonTool(Tool):
    name = "polygon"
    label = "Polygon"
    shortcut = "P"
    status_tip = "Click vertices; click the first one, double-click or Enter to close; Backspace: undo a vertex"

    def __init__(self, canvas, session_source) -> None:
        super().__init__(canvas, session_source)
        self.vertices: list[QPointF] = []
        self._cursor_pos: QPointF | None = None

    def cancel(self) -> None:
        self.vertices = []

    def press(self, event: ToolEvent) -> bool:
        if self.session is None or event.button != Qt.MouseButton.LeftButton:
            return False
        if len(self.vertices) >= 3 and self.canvas.screen_distance(event.pos, self.vertices[0]) <= CLOSE_DISTANCE:
            self.close_polygon()
            return True
        self.vertices.append(self._clamp(event.pos))
        return True

    def double_click(self, event: ToolEvent) -> bool:
        # the double-click's first press already added a vertex; the second press adds another
        # at the same place, which closing drops
        if len(self.vertices) >= 2 and self.canvas.screen_distance(self.vertices[-1], event.pos) < CLOSE_DISTANCE:
            self.vertices.pop()
        self.close_polygon()
        return True

    def move(self, event: ToolEvent) -> bool:
        self._cursor_pos = event.pos
        return bool(self.vertices)

    def key(self, event: QKeyEvent) -> bool:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.vertices:
            self.close_polygon()
            return True
        if event.key() == Qt.Key.Key_Backspace and self.vertices:
            self.vertices.pop()
            return True
        if event.key() == Qt.Key.Key_Escape and self.vertices:
            self.cancel()
            return True
        return False

    def _clamp(self, point: QPointF) -> QPointF:
        image = self.session.image
        return QPointF(min(max(point.x(), 0.0), image.width), min(max(point.y(), 0.0), image.height))

    def close_polygon(self) -> None:
        vertices, self.vertices = self.vertices, []
        session = self.session
        if len(vertices) < 3 or session is None:
            self.message.emit("A polygon needs at least 3 vertices")
            return
        flat = [value for point in vertices for value in (point.x(), point.y())]
        category = session.ensure_category()
        try:
            added = session.history.add(session.image_id, category.id, "Polygon", polygons=[flat])
        except ValueError as error:
            self.message.emit(f"Polygon not added: {error}")
            return
        if added.area == 0:
            session.history.undo()
            self.message.emit("The polygon covers no pixel centre; nothing added")
            return
        session.select([added.id])
        session.mark_in_review()

    def paint(self, painter: QPainter) -> None:
        if not self.vertices:
            return
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        points = [self.canvas.image_to_widget(v) for v in self.vertices]
        if self._cursor_pos is not None:
            points.append(self.canvas.image_to_widget(self._cursor_pos))
        category = self.session.current_category if self.session else None
        color = QColor(category.color if category else "#ffffff")
        fill = QColor(color)
        fill.setAlpha(60)
        painter.setBrush(fill)
        painter.setPen(QPen(color, 1.5))
        painter.drawPolygon(QPolygonF(points))
        painter.setPen(QPen(QColor(0, 0, 0), 1))
        for index, point in enumerate(points[: len(self.vertices)]):
            painter.setBrush(QColor(255, 255, 255) if index else color)
            size = 4.0 if index else 5.5
            painter.drawRect(point.x() - size / 2 * 1.5, point.y() - size / 2 * 1.5, size * 1.5, size * 1.5)
