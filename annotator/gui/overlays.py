"""What the canvas draws for one instance's mask: its fill, sampled per pyramid level in tiles,
and its outline, clipped to the view and simplified per level; both in image coordinates.

A frame never touches more mask pixels than the screen shows. Fill tiles hold the mask sampled
once per pyramid-level pixel (at level 0 exactly the mask's pixels), so a fill is exact at any
zoom and costs about the window's size at any zoom; they are cached (least recently used first
out) and rebuilt only when the instance changes. The mask is sampled straight from its RLE's
runs, never decoded whole (docs/decisions/0005-canvas.md).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import cv2
import numpy as np
from PySide6.QtCore import QByteArray, QDataStream, QRectF
from PySide6.QtGui import QColor, QImage, QPainterPath

from annotator import masks
from annotator.store import Instance

TILE_SIDE = 512  # level pixels
TILE_BUDGET = 96 * 2**20  # bytes of cached fill tiles (one byte a pixel)


@dataclass
class _Contours:
    """An instance's contours, each closed (its first point repeated at its end), one after the
    other: the points, for each point the length along all contours before it and the index
    of its contour's first point."""

    points: np.ndarray  # M x 2 float64, image coordinates
    along: np.ndarray  # M, non-decreasing
    firsts: np.ndarray  # M int64

    @classmethod
    def of(cls, contours: list[np.ndarray]) -> _Contours:
        closed = [np.concatenate([c, c[:1]]).astype(np.float64) for c in contours if len(c)]
        if not closed:
            return cls(np.zeros((0, 2)), np.zeros(0), np.zeros(0, dtype=np.int64))
        sizes = np.array([len(c) for c in closed])
        points = np.concatenate(closed)
        steps = np.hypot(*np.diff(points, axis=0).T)
        steps[np.cumsum(sizes)[:-1] - 1] = 0.0  # from one contour's end to the next one's start
        return cls(points, np.concatenate([[0.0], np.cumsum(steps)]), np.repeat(np.cumsum(sizes) - sizes, sizes))

    def split(self) -> list[np.ndarray]:
        """Each contour's points, without the repeated first point."""
        return [c[:-1] for c in np.split(self.points, np.flatnonzero(np.diff(self.firsts)) + 1) if len(c)]


def _path(points: np.ndarray, starts: np.ndarray) -> QPainterPath:
    """Polylines as the subpaths of one QPainterPath: ``points`` (N x 2), a new subpath at each
    index in ``starts`` (sorted, from 0). Read from QDataStream's form of a path (big-endian: an
    int32 element count; per element an int32 type, 0 move or 1 line, and x, y as doubles; the
    int32 index of the last subpath's start; an int32 fill rule), since one QPointF a point from
    Python costs thirty times more on a long contour."""
    path = QPainterPath()
    if len(points) == 0:
        return path
    elements = np.empty(len(points), dtype=[("type", ">i4"), ("xy", ">f8", 2)])
    elements["type"] = 1
    elements["type"][starts] = 0
    elements["xy"] = points
    tail = np.array([starts[-1], 0], dtype=">i4")
    buffer = QByteArray(np.array([len(points)], dtype=">i4").tobytes() + elements.tobytes() + tail.tobytes())
    QDataStream(buffer) >> path
    return path


@dataclass
class MaskOverlay:
    """One instance as drawn. Holds the RLE's run ends (not the mask), the contours once asked
    for, and the last clipped outline."""

    instance_id: int
    rect: QRectF  # the instance's box, image coordinates
    color: QColor
    # cumulative ends of the RLE's runs over the column-major flat image; runs alternate
    # background, foreground from background: None for a box-only instance
    run_ends: np.ndarray | None
    rle: masks.RLE | None = None
    _levels: dict[int, _Contours] = field(default_factory=dict)  # by pyramid level
    _clipped: tuple[tuple, QPainterPath] | None = None

    def contains(self, x: float, y: float) -> bool:
        """Whether image point ``(x, y)`` lies on the mask (or in the box of a box-only instance)."""
        box = self.rect
        if not (box.left() <= x < box.right() and box.top() <= y < box.bottom()):
            return False
        if self.run_ends is None:
            return True
        return bool(self.sample(np.array([int(y)]), np.array([int(x)]))[0, 0])

    def sample(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The mask at pixels ``rows x cols`` (int arrays inside the image), a ``len(rows) x
        len(cols)`` uint8 array of 0 and 1: which run each pixel's flat index falls in."""
        height = int(self.rle["size"][0])
        flat = cols[:, None].astype(np.int64) * height + rows[None, :]  # column-major, sorted
        return (np.searchsorted(self.run_ends, flat, side="right") & 1).astype(np.uint8).T

    # -- outline --------------------------------------------------------------------------------

    def contours(self, level: int) -> _Contours:
        """Contours through boundary pixel centres; from level 1 on, simplified to within half a
        level pixel (under half a screen pixel at that level's zooms), and those smaller than a
        level pixel left out (the fill shows them)."""
        if level not in self._levels:
            if level == 0:
                self._levels[0] = _Contours.of(self._trace())
            else:
                side = 2**level
                self._levels[level] = _Contours.of(
                    [
                        cv2.approxPolyDP(c.astype(np.float32), 0.5 * side, True).reshape(-1, 2)
                        for c in self.contours(0).split()
                        if np.ptp(c, axis=0).max() >= side
                    ]
                )
        return self._levels[level]

    def _trace(self) -> list[np.ndarray]:
        box = self.rect
        if self.run_ends is None:  # the box itself
            return [
                np.array(
                    [
                        [box.left(), box.top()],
                        [box.right(), box.top()],
                        [box.right(), box.bottom()],
                        [box.left(), box.bottom()],
                    ]
                )
            ]
        x, y, w, h = (int(v) for v in (box.x(), box.y(), box.width(), box.height()))
        # traced on the transposed crop, which decode_crop gives as whole rows (copying it into
        # row order would cost several times the tracing on a large mask); points come back as
        # (row, column), reversed below
        transposed = np.ascontiguousarray(masks.decode_crop(self.rle, x, y, w, h).T)
        found, _ = cv2.findContours(transposed, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        return [c.reshape(-1, 2)[:, ::-1] + (x + 0.5, y + 0.5) for c in found]  # pixel centres

    def outline(self, level: int, visible: QRectF, dash_period: float) -> QPainterPath:
        """The stretches of the contours that cross image rectangle ``visible``, as one path.
        Each stretch starts where its contour's length is a whole number of ``dash_period``
        (image pixels), a little before the view: a dash pattern of that period then lies at
        the same places along the contour however the view clips it, and stays put as it pans."""
        key = (level, visible.getCoords(), dash_period)
        if self._clipped is not None and self._clipped[0] == key:
            return self._clipped[1]
        contours = self.contours(level)
        p, along, firsts = contours.points, contours.along, contours.firsts
        x0, y0, x1, y1 = visible.getCoords()
        a, b = p[:-1], p[1:]
        crossing = (
            (firsts[1:] == firsts[:-1])  # the step stays on one contour
            & (np.maximum(a[:, 0], b[:, 0]) >= x0)
            & (np.minimum(a[:, 0], b[:, 0]) <= x1)
            & (np.maximum(a[:, 1], b[:, 1]) >= y0)
            & (np.minimum(a[:, 1], b[:, 1]) <= y1)
        )
        # runs of crossing steps: steps first..end-1 join points first..end
        edges = np.diff(np.concatenate([[0], crossing.astype(np.int8), [0]]))
        first, end = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        # where each run starts: a whole number of periods along its contour, on the step k
        # (between the contour's first point and the run's) that holds that length
        offset = along[firsts[first]]
        start = offset + np.floor((along[first] - offset) / dash_period) * dash_period
        k = np.clip(np.searchsorted(along, start, side="right") - 1, firsts[first], first)
        step = along[k + 1] - along[k]
        t = np.divide(start - along[k], step, out=np.zeros_like(step), where=step > 0)
        counts = end - k  # points after the head: k + 1 .. end
        starts = np.cumsum(counts + 1) - (counts + 1)
        points = np.empty((len(first) + int(counts.sum()), 2))
        points[starts] = p[k] + (p[k + 1] - p[k]) * t[:, None]
        rest = np.ones(len(points), dtype=bool)
        rest[starts] = False
        points[rest] = p[np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts - k - 1, counts)]
        path = _path(points, starts)
        self._clipped = (key, path)
        return path


def build_overlay(instance: Instance, color: QColor) -> MaskOverlay:
    x, y, w, h = instance.bbox
    if instance.rle is None or w <= 0 or h <= 0:
        return MaskOverlay(instance.id, QRectF(x, y, w, h), color, None)
    run_ends = np.cumsum(masks.run_lengths(instance.rle["counts"]))
    return MaskOverlay(instance.id, QRectF(int(x), int(y), int(w), int(h)), color, run_ends, instance.rle)


def _fill_tile(overlay: MaskOverlay, level: int, tile: tuple[int, int]) -> tuple[QRectF, QImage] | None:
    """The part of the mask in ``tile`` (column, row of the level's grid) clipped to its box, one
    sample at the centre of each level pixel, as an image coloured where the mask is; and the
    image rectangle it covers. None when the box misses the tile."""
    factor = 2**level
    box = overlay.rect
    lx0 = max(tile[0] * TILE_SIDE, math.floor(box.left() / factor))
    ly0 = max(tile[1] * TILE_SIDE, math.floor(box.top() / factor))
    lx1 = min((tile[0] + 1) * TILE_SIDE, math.ceil(box.right() / factor))
    ly1 = min((tile[1] + 1) * TILE_SIDE, math.ceil(box.bottom() / factor))
    if lx1 <= lx0 or ly1 <= ly0:
        return None
    height, width = overlay.rle["size"]
    cols = np.minimum(np.arange(lx0, lx1) * factor + factor // 2, width - 1)
    rows = np.minimum(np.arange(ly0, ly1) * factor + factor // 2, height - 1)
    mask = np.ascontiguousarray(overlay.sample(rows, cols))
    image = QImage(mask.data, mask.shape[1], mask.shape[0], mask.strides[0], QImage.Format.Format_Indexed8).copy()
    image.setColorTable([0, overlay.color.rgba()])  # index 0 transparent, 1 the colour
    rect = QRectF(lx0 * factor, ly0 * factor, (lx1 - lx0) * factor, (ly1 - ly0) * factor)
    return rect, image


class OverlayCache:
    """Overlays by instance id, rebuilt when the instance or its colour changes; and their fill
    tiles, kept up to :data:`TILE_BUDGET` bytes."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[float, str, MaskOverlay]] = {}
        # (instance id, level, column, row) -> (frame last drawn in, the tile or None), oldest first
        self._tiles: OrderedDict[tuple, tuple[int, tuple[QRectF, QImage] | None]] = OrderedDict()
        self._tile_bytes = 0
        self._frame = 0

    def get(self, instance: Instance, color: QColor) -> MaskOverlay:
        entry = self._entries.get(instance.id)
        if entry is not None and entry[0] == instance.updated_at and entry[1] == color.name():
            return entry[2]
        if entry is not None:
            for key in [k for k in self._tiles if k[0] == instance.id]:
                self._forget(key)
        overlay = build_overlay(instance, color)
        self._entries[instance.id] = (instance.updated_at, color.name(), overlay)
        return overlay

    def fill_tiles(self, overlay: MaskOverlay, level: int, visible: QRectF) -> list[tuple[QRectF, QImage]]:
        """The fill tiles of ``overlay`` at pyramid ``level`` that cover image rectangle
        ``visible``; none for a box-only instance."""
        area = visible.intersected(overlay.rect)
        if overlay.run_ends is None or area.isEmpty():
            return []
        span = TILE_SIDE * 2**level  # image pixels a tile
        tiles = []
        for row in range(int(area.top() // span), math.ceil(area.bottom() / span)):
            for col in range(int(area.left() // span), math.ceil(area.right() / span)):
                key = (overlay.instance_id, level, col, row)
                if key in self._tiles:
                    self._tiles.move_to_end(key)
                    found = self._tiles[key][1]
                else:
                    found = _fill_tile(overlay, level, (col, row))
                    self._tile_bytes += found[1].sizeInBytes() if found else 0
                self._tiles[key] = (self._frame, found)
                if found is not None:
                    tiles.append(found)
        return tiles

    def end_frame(self) -> None:
        """Drops the least recently used tiles over the budget, never one the frame just drew
        (a frame that needs more than the budget keeps them all until the next)."""
        while self._tile_bytes > TILE_BUDGET and self._tiles:
            key, (frame, _) = next(iter(self._tiles.items()))
            if frame == self._frame:
                break
            self._forget(key)
        self._frame += 1

    def _forget(self, key: tuple) -> None:
        _, found = self._tiles.pop(key)
        self._tile_bytes -= found[1].sizeInBytes() if found else 0

    def clear(self) -> None:
        self._entries.clear()
        self._tiles.clear()
        self._tile_bytes = 0
