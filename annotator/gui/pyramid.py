"""An image as a pyramid of downscaled copies, so that painting costs the size of the screen, not
of the image: the canvas draws only the visible part of the coarsest level that still has at least
one level pixel per screen pixel (a 100-megapixel image fitted to the window paints from a level of
about a megapixel)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PySide6.QtGui import QImage

# Levels are halved until the longer side is at most this many pixels.
SMALLEST_LEVEL_SIDE = 1024


@dataclass
class ImagePyramid:
    """``levels[k]`` is the ``H x W x 3`` uint8 RGB image downscaled by ``2**k`` (level 0 is the
    original); every level is C-contiguous."""

    levels: list[np.ndarray]

    @property
    def width(self) -> int:
        return int(self.levels[0].shape[1])

    @property
    def height(self) -> int:
        return int(self.levels[0].shape[0])

    @property
    def pixels(self) -> np.ndarray:
        return self.levels[0]

    def level_for_scale(self, scale: float) -> int:
        """The coarsest level with at least one level pixel per screen pixel at view ``scale``
        (screen pixels per image pixel)."""
        if scale <= 0:
            return len(self.levels) - 1
        level = int(math.floor(math.log2(1.0 / scale))) if scale < 1 else 0
        return max(0, min(level, len(self.levels) - 1))

    def region(
        self, level: int, x0: float, y0: float, x1: float, y1: float
    ) -> tuple[QImage, tuple[int, int, int, int]]:
        """The part of ``level`` covering image rectangle ``[x0, x1) x [y0, y1)`` (level-0 pixels),
        as a QImage that owns its pixels, and that part's rectangle in level-0 pixels
        ``(x, y, width, height)``; widened to whole level pixels."""
        factor = 2**level
        array = self.levels[level]
        h, w = array.shape[:2]
        lx0 = max(0, min(w, int(math.floor(x0 / factor))))
        ly0 = max(0, min(h, int(math.floor(y0 / factor))))
        lx1 = max(0, min(w, int(math.ceil(x1 / factor))))
        ly1 = max(0, min(h, int(math.ceil(y1 / factor))))
        crop = np.ascontiguousarray(array[ly0:ly1, lx0:lx1])
        if crop.size == 0:
            return QImage(), (0, 0, 0, 0)
        image = QImage(crop.data, crop.shape[1], crop.shape[0], crop.strides[0], QImage.Format.Format_RGB888).copy()
        # (a level's last pixel may reach past the image edge by less than one screen pixel)
        rect = (lx0 * factor, ly0 * factor, (lx1 - lx0) * factor, (ly1 - ly0) * factor)
        return image, rect


def build_pyramid(pixels: np.ndarray) -> ImagePyramid:
    levels = [np.ascontiguousarray(pixels)]
    while max(levels[-1].shape[:2]) > SMALLEST_LEVEL_SIDE:
        top = levels[-1]
        size = (max(1, (top.shape[1] + 1) // 2), max(1, (top.shape[0] + 1) // 2))
        levels.append(cv2.resize(top, size, interpolation=cv2.INTER_AREA))
    return ImagePyramid(levels)
