"""Keypoints of the selected instance: a click places the next unlabelled keypoint (v=2, visible),
dragging a keypoint moves it, a right-click cycles its visibility 2 -> 1 (occluded) -> 0 (not
labelled, position cleared, as COCO stores it) -> 2. The keypoint under the pointer is named."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen

from annotator.gui.canvas import ToolEvent
from annotator.gui.tools.base import Tool

GRAB_DISTANCE = 8.0  # screen pixels


class KeypointTool(Tool):
    name = "keypoints"
    label = "Keypoints"
    shortcut = "K"
    status_tip = "Click: place the next keypoint; drag: move; right-click: cycle visibility 2/1/0"
    next_changed = Signal(int)  # 0-based index of the keypoint the next click places, -1 none

    def __init__(self, canvas, session_source) -> None:
        super().__init__(canvas, session_source)
        self.next_index = -1
        self._drag_index = -1
        self._drag_pos: QPointF | None = None
        self._hover_index = -1  # the selection's keypoint under the pointer, named on the canvas

    def activate(self) -> None:
        super().activate()
        self.refresh()

    def cancel(self) -> None:
        self._drag_index, self._drag_pos, self._hover_index = -1, None, -1

    def _target(self):
        instance = self.target_instance()
        if instance is None:
            self.message.emit("Select an instance whose category has keypoints")
            return None, None
        category = self.session.project.category(instance.category_id)
        if not category.num_keypoints:
            self.message.emit(f"Category '{category.name}' has no keypoints; add them in the category panel")
            return None, None
        return instance, category

    def refresh(self) -> None:
        """Points the next placement at the first unlabelled keypoint of the selection."""
        session = self.session
        instance = session.selected if session else None
        points = instance.keypoints_array if instance is not None else None
        index = -1
        if points is not None:
            free = np.flatnonzero(points[:, 2] <= 0)
            index = int(free[0]) if free.size else -1
        self.set_next(index)

    def set_next(self, index: int) -> None:
        self.next_index = index
        self.next_changed.emit(index)
        session = self.session
        instance = session.selected if session else None
        if instance is not None and index >= 0:
            name = session.project.category(instance.category_id).keypoints[index]
            self.message.emit(f"Next keypoint: {name} ({index + 1})")
        elif instance is not None and instance.keypoints_array is not None:
            self.message.emit("Every keypoint is placed: drag one to move it, right-click for its visibility")

    def _nearest(self, instance, pos: QPointF) -> int:
        points = instance.keypoints_array
        best, best_distance = -1, GRAB_DISTANCE
        for index, (x, y, v) in enumerate(points):
            if v > 0:
                distance = self.canvas.screen_distance(QPointF(x, y), pos)
                if distance <= best_distance:
                    best, best_distance = index, distance
        return best

    def _write(self, instance, points: np.ndarray, text: str) -> None:
        self.session.history.update(instance.id, text, keypoints=points.reshape(-1))
        self.session.mark_in_review()

    def press(self, event: ToolEvent) -> bool:
        if self.session is None or event.button not in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            return False
        instance, category = self._target()
        if instance is None:
            return True
        index = self._nearest(instance, event.pos)
        if event.button == Qt.MouseButton.RightButton:
            if index >= 0:
                points = instance.keypoints_array.copy()
                v = int(points[index, 2])
                points[index, 2] = {2: 1, 1: 0}.get(v, 2)
                if points[index, 2] == 0:
                    points[index, :2] = 0.0
                self._write(instance, points, f"Keypoint {category.keypoints[index]} v={int(points[index, 2])}")
                self.refresh()
            return True
        if index >= 0:
            self._drag_index, self._drag_pos = index, event.pos
            return True
        if self.next_index < 0 or self.next_index >= category.num_keypoints:
            self.refresh()
        if self.next_index < 0:
            self.message.emit("Every keypoint is placed: drag one to move it")
            return True
        points = instance.keypoints_array.copy()
        points[self.next_index] = (event.pos.x(), event.pos.y(), 2)
        self._write(instance, points, f"Place keypoint {category.keypoints[self.next_index]}")
        self.refresh()
        return True

    def move(self, event: ToolEvent) -> bool:
        if self._drag_index >= 0:
            self._drag_pos = event.pos
            return True
        instance = self.session.selected if self.session and event.buttons == Qt.MouseButton.NoButton else None
        hover = (
            self._nearest(instance, event.pos) if instance is not None and instance.keypoints_array is not None else -1
        )
        if hover == self._hover_index:
            return False
        self._hover_index = hover
        return True

    def release(self, event: ToolEvent) -> bool:
        if self._drag_index < 0 or event.button != Qt.MouseButton.LeftButton:
            return False
        index, pos = self._drag_index, event.pos
        self.cancel()
        instance, category = self._target()
        if instance is None:
            return True
        points = instance.keypoints_array.copy()
        if (points[index, 0], points[index, 1]) != (pos.x(), pos.y()):
            points[index, :2] = (pos.x(), pos.y())
            self._write(instance, points, f"Move keypoint {category.keypoints[index]}")
        return True

    def paint(self, painter: QPainter) -> None:
        if self._drag_index >= 0 and self._drag_pos is not None:
            centre = self.canvas.image_to_widget(self._drag_pos)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            painter.setPen(QPen(QColor(255, 255, 255), 2))
            painter.setBrush(QColor(255, 255, 0, 160))
            painter.drawEllipse(centre, 6, 6)
        self._paint_name(painter)

    def _paint_name(self, painter: QPainter) -> None:
        """ "tail (2)", "tail (2), occluded": beside the keypoint dragged or under the pointer."""
        index = self._drag_index if self._drag_index >= 0 else self._hover_index
        instance = self.session.selected if self.session else None
        points = instance.keypoints_array if instance is not None else None
        if index < 0 or points is None or index >= len(points):
            return
        category = self.session.project.category(instance.category_id)
        x, y, v = points[index]
        where = self._drag_pos if self._drag_index >= 0 else QPointF(x, y)
        text = f"{category.keypoints[index]} ({index + 1})" + (", occluded" if v == 1 else "")
        self.canvas.paint_tag(painter, self.canvas.image_to_widget(where) + QPointF(8, -6), text, QColor(0, 0, 0, 190))
