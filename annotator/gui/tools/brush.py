"""Brush and eraser: paint onto or erase from the selected instance's mask.

A stroke is collected as points while the button is down (drawn as a preview), and rasterised into
the mask once, on release: one store write and one undo step per stroke. The brush with nothing
selected starts a new instance of the current category; the eraser with nothing selected erases
from the instance under the stroke's first point.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor, QCursor, QKeyEvent, QPainter, QPainterPath, QPen

from annotator.gui.canvas import ToolEvent
from annotator.gui.tools.base import Tool
from annotator.strokes import MAX_RADIUS, MIN_RADIUS, rasterise_stroke


class BrushTool(Tool):
    name = "brush"
    label = "Brush"
    shortcut = "B"
    erase = False
    status_tip = "Paint onto the selected mask (nothing selected: a new instance); +/- brush size"
    radius_changed = Signal(int)

    # one size for brush and eraser, as in most painting programs
    _shared_radius = 10

    def __init__(self, canvas, session_source) -> None:
        super().__init__(canvas, session_source)
        self._points: list[tuple[float, float]] = []
        self._cursor_pos: QPointF | None = None
        self._target_id = 0

    @property
    def radius(self) -> int:
        return BrushTool._shared_radius

    def set_radius(self, radius: int) -> None:
        BrushTool._shared_radius = max(MIN_RADIUS, min(MAX_RADIUS, int(radius)))
        self.radius_changed.emit(BrushTool._shared_radius)
        self.message.emit(f"Brush size {2 * BrushTool._shared_radius} px")
        self.canvas.update()

    def grow(self, steps: int) -> None:
        factor = 1.25**steps
        radius = self.radius * factor
        self.set_radius(int(round(radius)) if abs(round(radius) - self.radius) >= 1 else self.radius + steps)

    @property
    def cursor(self) -> QCursor:
        return QCursor(Qt.CursorShape.BlankCursor)

    def cancel(self) -> None:
        self._points = []
        self._target_id = 0

    def press(self, event: ToolEvent) -> bool:
        session = self.session
        if session is None or event.button != Qt.MouseButton.LeftButton:
            return False
        target = self.target_instance() if session.selection else None
        if session.selection and target is None:
            return True  # locked: swallow the stroke
        if target is None and self.erase:
            target = self.canvas.instance_at(event.pos)
            if target is None or not session.view.editable(target.id):
                self.message.emit("Nothing to erase here")
                return True
        self._target_id = target.id if target else 0
        self._points = [(event.pos.x(), event.pos.y())]
        return True

    def move(self, event: ToolEvent) -> bool:
        self._cursor_pos = event.pos
        if self._points and event.buttons & Qt.MouseButton.LeftButton:
            self._points.append((event.pos.x(), event.pos.y()))
        return True

    def release(self, event: ToolEvent) -> bool:
        if event.button != Qt.MouseButton.LeftButton or not self._points:
            return False
        points, target_id = self._points, self._target_id
        self.cancel()
        self.commit(points, target_id)
        return True

    def commit(self, points: list[tuple[float, float]], target_id: int) -> None:
        session = self.session
        image = session.image
        stroke = rasterise_stroke((image.height, image.width), points, self.radius)
        if target_id:
            instance = session.project.instance(target_id)
            mask = instance.mask
            if mask is None:  # a box-only instance: start from its box
                mask = np.zeros((image.height, image.width), dtype=bool)
                x, y, w, h = (int(round(v)) for v in instance.bbox)
                mask[y : y + h, x : x + w] = True
            new = mask & ~stroke if self.erase else mask | stroke
            if np.array_equal(new, mask):
                return
            result = session.history.set_mask(target_id, new, "Erase" if self.erase else "Brush")
            session.select([result.id] if result else [])
        elif not self.erase and stroke.any():
            category = session.ensure_category()
            added = session.history.add(image.id, category.id, "Brush new instance", mask=stroke)
            session.select([added.id])
        session.mark_in_review()

    def key(self, event: QKeyEvent) -> bool:
        if event.key() in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.grow(1)
            return True
        if event.key() in (Qt.Key.Key_Minus, Qt.Key.Key_Underscore):
            self.grow(-1)
            return True
        return False

    def paint(self, painter: QPainter) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        radius_on_screen = self.radius * self.canvas.scale
        if len(self._points) > 0:
            path = QPainterPath(self.canvas.image_to_widget(QPointF(*self._points[0])))
            for point in self._points[1:]:
                path.lineTo(self.canvas.image_to_widget(QPointF(*point)))
            color = QColor(255, 255, 255, 110) if self.erase else QColor(self._color())
            if not self.erase:
                color.setAlpha(140)
            pen = QPen(
                color,
                max(1.0, 2 * radius_on_screen),
                Qt.PenStyle.SolidLine,
                Qt.PenCapStyle.RoundCap,
                Qt.PenJoinStyle.RoundJoin,
            )
            painter.setPen(pen)
            if len(self._points) == 1:
                painter.setBrush(color)
                painter.setPen(Qt.PenStyle.NoPen)
                painter.drawEllipse(path.currentPosition(), radius_on_screen, radius_on_screen)
            else:
                painter.drawPath(path)
        if self._cursor_pos is not None:
            centre = self.canvas.image_to_widget(self._cursor_pos)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(QColor(0, 0, 0), 3))
            painter.drawEllipse(centre, radius_on_screen, radius_on_screen)
            painter.setPen(QPen(QColor(255, 255, 255) if not self.erase else QColor(255, 120, 120), 1.5))
            painter.drawEllipse(centre, radius_on_screen, radius_on_screen)

    def _color(self) -> str:
        session = self.session
        target = session.selected if session else None
        if target is not None:
            return self.canvas.category_color(target.category_id).name()
        category = session.current_category if session else None
        return category.color if category else "#ffffff"


class EraserTool(BrushTool):
    name = "eraser"
    label = "Eraser"
    shortcut = "E"
    erase = True
    status_tip = "Erase from the selected mask (nothing selected: the mask under the cursor); +/- size"
