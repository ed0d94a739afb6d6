"""What the canvas draws for one instance's mask: a coloured image of the mask's bounding box and
its outline, both in image coordinates, built once per version of the instance and cached."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PySide6.QtCore import QPointF, QRectF
from PySide6.QtGui import QColor, QImage, QPainterPath, QPolygonF

from annotator import masks
from annotator.store import Instance

# A mask whose box is larger than this is drawn from a nearest-neighbour downscale (its outline
# stays exact): memory stays bounded on 100-megapixel images.
MAX_OVERLAY_SIDE = 2048


@dataclass
class MaskOverlay:
    image: QImage | None  # RGBA: the colour where the mask is, transparent elsewhere
    rect: QRectF  # the image rectangle the overlay covers (the instance's box)
    outline: QPainterPath  # contours through boundary pixel centres, image coordinates
    crop: np.ndarray | None  # bool mask of the box at overlay resolution (for hit tests)
    factor: float  # image pixels per overlay pixel

    def contains(self, x: float, y: float) -> bool:
        """Whether image point ``(x, y)`` lies on the mask (or in the box of a box-only instance)."""
        if not self.rect.contains(QPointF(x, y)):
            return False
        if self.crop is None:
            return True
        col = int((x - self.rect.x()) / self.factor)
        row = int((y - self.rect.y()) / self.factor)
        h, w = self.crop.shape
        return 0 <= row < h and 0 <= col < w and bool(self.crop[row, col])


def _outline(crop: np.ndarray, x0: int, y0: int) -> QPainterPath:
    contours, _ = cv2.findContours(crop.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    path = QPainterPath()
    for contour in contours:
        points = contour.reshape(-1, 2).astype(np.float64) + (x0 + 0.5, y0 + 0.5)  # pixel centres
        path.addPolygon(QPolygonF([QPointF(px, py) for px, py in points]))
        path.closeSubpath()
    return path


def build_overlay(instance: Instance, color: QColor) -> MaskOverlay:
    x, y, w, h = instance.bbox
    if instance.rle is None or w <= 0 or h <= 0:
        rect = QRectF(x, y, w, h)
        path = QPainterPath()
        path.addRect(rect)
        return MaskOverlay(None, rect, path, None, 1.0)
    x0, y0, w, h = int(x), int(y), int(w), int(h)
    crop = masks.decode_crop(instance.rle, x0, y0, w, h).astype(bool)
    outline = _outline(crop, x0, y0)
    factor = 1.0
    if max(w, h) > MAX_OVERLAY_SIDE:
        factor = max(w, h) / MAX_OVERLAY_SIDE
        size = (max(1, round(w / factor)), max(1, round(h / factor)))
        crop = cv2.resize(crop.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        factor = w / size[0]
    rgba = np.zeros(crop.shape + (4,), dtype=np.uint8)
    rgba[crop] = (color.red(), color.green(), color.blue(), 255)
    image = QImage(rgba.data, rgba.shape[1], rgba.shape[0], rgba.strides[0], QImage.Format.Format_RGBA8888).copy()
    return MaskOverlay(image, QRectF(x0, y0, w, h), outline, crop, factor)


class OverlayCache:
    """Overlays by instance id, rebuilt when the instance or its colour changes."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[float, str, MaskOverlay]] = {}

    def get(self, instance: Instance, color: QColor) -> MaskOverlay:
        entry = self._entries.get(instance.id)
        if entry is not None and entry[0] == instance.updated_at and entry[1] == color.name():
            return entry[2]
        overlay = build_overlay(instance, color)
        self._entries[instance.id] = (instance.updated_at, color.name(), overlay)
        return overlay

    def clear(self) -> None:
        self._entries.clear()
