"""Brush strokes as mask arithmetic, Qt-free: the pixels a stroke paints (:func:`rasterise_stroke`, the
arithmetic of the brush and eraser tools), and where a person puts the next correction on a mask that
differs from the object (:func:`next_click`, :func:`correction_stroke`: the simulated annotator of
``bench/effort.py``, docs/decisions/0012).

Masks are ``H x W`` bool arrays. Points are ``(x, y)`` in continuous image coordinates: pixel
``(row i, column j)`` covers ``[j, j+1) x [i, i+1)``, so its centre is ``(j + 0.5, i + 0.5)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MIN_RADIUS, MAX_RADIUS = 1, 500  # the brush's radius, image pixels


def rasterise_stroke(shape: tuple[int, int], points: list[tuple[float, float]], radius: float) -> np.ndarray:
    """The ``H x W`` bool mask of pixels whose centres lie within ``radius`` of the polyline
    ``points`` (image coordinates)."""
    stroke = np.zeros(shape, dtype=np.uint8)
    shift = 4  # sub-pixel precision of cv2's drawing: coordinates in 1/16 pixel
    scale = 1 << shift
    # cv2 puts pixel centres at integers; ours are at +0.5
    fixed = [(int(round((x - 0.5) * scale)), int(round((y - 0.5) * scale))) for x, y in points]
    r = int(round(radius * scale))
    for point in fixed:
        cv2.circle(stroke, point, r, 1, -1, cv2.LINE_8, shift)
    thickness = max(1, int(round(2 * radius)))
    for a, b in zip(fixed, fixed[1:]):
        cv2.line(stroke, a, b, 1, thickness, cv2.LINE_8, shift)
    return stroke.astype(bool)


@dataclass(frozen=True)
class Click:
    """Where the click protocol of interactive segmentation puts the next click (RITM, Sofiiuk et
    al. 2022): ``point`` (x, y) at the centre of pixel ``pixel`` (row, column), the pixel of the
    largest error region farthest from that region's edge; ``depth`` that distance in pixels;
    ``positive`` when the region is object the mask misses, not background it covers."""

    point: tuple[float, float]
    pixel: tuple[int, int]
    depth: float
    positive: bool


@dataclass(frozen=True)
class CorrectionStroke:
    """One drag of the brush (``erase`` False) or the eraser along ``points`` (image coordinates)
    with a brush of ``radius`` pixels, as :func:`rasterise_stroke` paints it."""

    points: list[tuple[float, float]]
    radius: int
    erase: bool


def _depth(region: np.ndarray) -> np.ndarray:
    """Each pixel's Euclidean distance to the nearest pixel outside ``region`` (pixel centres), the
    image border counting as outside (the region padded by one pixel, as RITM does)."""
    padded = np.pad(region, 1).astype(np.uint8)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def next_click(mask: np.ndarray, target: np.ndarray) -> Click | None:
    """The next click on ``mask`` towards ``target`` (both ``H x W`` bool), by RITM's rule: the
    deepest pixel of the missed part (``target`` and not ``mask``) or of the extra part (``mask``
    and not ``target``), whichever is deeper (ties: the missed part), the first such pixel in
    raster order. On an empty ``mask`` it is the first click on the object. None where the two
    agree."""
    missed, extra = _depth(target & ~mask), _depth(mask & ~target)
    positive = missed.max(initial=0.0) >= extra.max(initial=0.0)
    depth = missed if positive else extra
    row, column = np.unravel_index(int(np.argmax(depth)), depth.shape)
    if depth[row, column] <= 0:
        return None
    return Click((column + 0.5, row + 0.5), (int(row), int(column)), float(depth[row, column]), bool(positive))


def correction_stroke(mask: np.ndarray, target: np.ndarray) -> CorrectionStroke | None:
    """The stroke a careful person makes to correct ``mask`` towards ``target`` (``H x W`` bool),
    placed as :func:`next_click` places a click; None where the two agree.

    The brush (for missed object) or the eraser (for extra background) is sized to the error region
    there: the largest whole-pixel radius whose disc, put down at the click, covers only pixels of
    the region (at least the brush's smallest radius). The stroke then drags that disc over every
    place, connected to the click, where it reaches the region without doing harm: the brush never
    paints background outside the mask, the eraser never erases object inside it (painting what is
    painted already changes nothing, so the disc may overlap the mask's own pixels). Only where the
    region is thinner than the smallest brush next to the object's edge does it spill, along the
    region's deepest pixels; and a drag may spill a pixel where it runs between two places.
    """
    click = next_click(mask, target)
    if click is None:
        return None
    region = ((target & ~mask) if click.positive else (mask & ~target)).astype(np.uint8)
    harmless = (target | mask if click.positive else ~(target & mask)).astype(np.uint8)
    radius = max(MIN_RADIUS, int(np.ceil(click.depth)) - 1)
    while radius > MIN_RADIUS and not cv2.erode(region, _dab(radius))[click.pixel]:
        radius -= 1
    places = cv2.erode(harmless, _dab(radius)) & cv2.dilate(region, _dab(radius))
    if not places.any():  # thinner than the smallest brush, along the object's edge: it spills
        places = (_depth(region > 0) >= click.depth).astype(np.uint8)
    rows, columns = np.nonzero(places)
    nearest = int(np.argmin((rows - click.pixel[0]) ** 2 + (columns - click.pixel[1]) ** 2))
    path = _walk(places.astype(bool), (int(rows[nearest]), int(columns[nearest])))
    return CorrectionStroke([(column + 0.5, row + 0.5) for row, column in path], radius, not click.positive)


def _dab(radius: int) -> np.ndarray:
    """What the brush of ``radius`` paints put down once (``rasterise_stroke`` of one point), as a
    uint8 kernel centred on its middle pixel."""
    side = 2 * radius + 3
    return rasterise_stroke((side, side), [(side / 2, side / 2)], radius).astype(np.uint8)


_STEPS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _walk(cells: np.ndarray, start: tuple[int, int]) -> list[tuple[int, int]]:
    """A walk from ``start`` through every cell of ``cells`` (``H x W`` bool) 8-connected to it,
    from one neighbour to the next, depth first, going back the way it came out of dead ends: one
    continuous drag over them all, a point a pixel as the mouse reports it."""
    height, width = cells.shape
    seen = np.zeros_like(cells, dtype=bool)
    seen[start] = True
    walk = [start]
    stack = [(start, iter(_STEPS))]
    while stack:
        (row, column), neighbours = stack[-1]
        for dr, dc in neighbours:
            r, c = row + dr, column + dc
            if 0 <= r < height and 0 <= c < width and cells[r, c] and not seen[r, c]:
                seen[r, c] = True
                walk.append((r, c))
                stack.append(((r, c), iter(_STEPS)))
                break
        else:
            stack.pop()
            if stack:
                walk.append(stack[-1][0])
    return walk
