"""Edit outline: the selected instance's polygon, as labelme edits one. Its vertices show as
handles: drag one to move it, click an edge to insert one there, right-click a vertex (or hover it
and press Delete) to delete it. An instance without an outline gets one traced from its mask
(annotator.outline). Each change is one undo step, and the mask follows the polygon."""

from __future__ import annotations

from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QKeyEvent, QPainter, QPen, QPolygonF

from annotator import outline
from annotator.gui.canvas import ToolEvent
from annotator.gui.tools.base import Tool

GRAB_DISTANCE = 7.0  # screen pixels from a vertex that pick it
EDGE_DISTANCE = 5.0  # screen pixels from an edge where a click inserts a vertex


class OutlineTool(Tool):
    name = "outline"
    label = "Edit outline"
    shortcut = "O"
    status_tip = "Drag a vertex to move it; click an edge to add one; right-click (or Delete) removes one"

    def __init__(self, canvas, session_source) -> None:
        super().__init__(canvas, session_source)
        self._drag: tuple[int, int] | None = None  # (part, index) of the vertex being dragged
        self._drag_pos: QPointF | None = None
        self._hover: tuple[int, int] | None = None
        # the last outline: tracing a mask is too slow for every repaint
        self._traced: tuple[tuple[int, float], list] = ((0, 0.0), [])

    def cancel(self) -> None:
        self._drag, self._drag_pos, self._hover = None, None, None

    def _outline(self):
        """The editable instance and its polygons, or (None, [])."""
        session = self.session
        instance = session.selected if session is not None else None
        if instance is None or not session.view.editable(instance.id):
            return None, []
        key = (instance.id, instance.updated_at)
        if self._traced[0] != key:
            self._traced = (key, outline.editable_outline(instance))
        return instance, self._traced[1]

    def _vertex_at(self, polygons, pos: QPointF) -> tuple[int, int] | None:
        part, index, distance = outline.nearest_vertex(polygons, pos.x(), pos.y())
        return (part, index) if distance * self.canvas.scale <= GRAB_DISTANCE else None

    def _write(self, instance, polygons, text: str) -> None:
        if polygons is None:
            self.message.emit("An outline needs at least 3 vertices; delete the instance instead")
            return
        self.session.history.update(instance.id, text, polygons=polygons)
        self.session.mark_in_review()

    def press(self, event: ToolEvent) -> bool:
        if self.session is None or event.button not in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            return False
        instance, polygons = self._outline()
        if instance is None:
            self.message.emit("Select an instance (Select tool) to edit its outline")
            return False
        if not polygons:
            self.message.emit("A box-only instance has no outline to edit")
            return True
        picked = self._vertex_at(polygons, event.pos)
        if event.button == Qt.MouseButton.RightButton:
            if picked is not None:
                self._write(instance, outline.deleted(polygons, *picked), "Delete vertex")
            return True
        if picked is not None:
            self._drag, self._drag_pos = picked, event.pos
            return True
        part, after, distance, foot = outline.nearest_edge(polygons, event.pos.x(), event.pos.y())
        if distance * self.canvas.scale <= EDGE_DISTANCE:
            self._write(instance, outline.inserted(polygons, part, after, *foot), "Insert vertex")
            self._drag, self._drag_pos = (part, after + 1), event.pos  # and keep dragging the new one
            return True
        return False  # elsewhere: the canvas pans

    def move(self, event: ToolEvent) -> bool:
        if self._drag is not None:
            self._drag_pos = event.pos
            return True
        instance, polygons = self._outline()
        hover = self._vertex_at(polygons, event.pos) if polygons else None
        if hover == self._hover:
            return instance is not None  # the handles follow the view
        self._hover = hover
        return True

    def release(self, event: ToolEvent) -> bool:
        if self._drag is None or event.button != Qt.MouseButton.LeftButton:
            return False
        (part, index), pos = self._drag, event.pos
        self.cancel()
        instance, polygons = self._outline()
        if (
            instance is not None
            and part < len(polygons)
            and outline.vertex(polygons, part, index)
            != (
                pos.x(),
                pos.y(),
            )
        ):
            image = self.session.image
            x, y = min(max(pos.x(), 0.0), image.width), min(max(pos.y(), 0.0), image.height)
            self._write(instance, outline.moved(polygons, part, index, x, y), "Move vertex")
        return True

    def key(self, event: QKeyEvent) -> bool:
        if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace) and self._hover is not None:
            instance, polygons = self._outline()
            if instance is not None and self._hover[0] < len(polygons):
                self._write(instance, outline.deleted(polygons, *self._hover), "Delete vertex")
                self._hover = None
                return True
        return False

    def paint(self, painter: QPainter) -> None:
        instance, polygons = self._outline()
        if instance is None:
            return
        color = QColor(self.session.project.category(instance.category_id).color)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        for part, flat in enumerate(polygons):
            points = [self.canvas.image_to_widget(QPointF(flat[i], flat[i + 1])) for i in range(0, len(flat), 2)]
            if self._drag is not None and self._drag[0] == part and self._drag_pos is not None:
                points[self._drag[1]] = self.canvas.image_to_widget(self._drag_pos)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(color, 1.5))
            painter.drawPolygon(QPolygonF(points))
            painter.setPen(QPen(QColor(0, 0, 0), 1))
            for index, point in enumerate(points):
                hovered = self._hover == (part, index) or self._drag == (part, index)
                painter.setBrush(QColor(255, 255, 0) if hovered else QColor(255, 255, 255))
                side = 8.0 if hovered else 6.0
                painter.drawRect(point.x() - side / 2, point.y() - side / 2, side, side)
