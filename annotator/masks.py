"""Instance masks as COCO compressed RLE, through pycocotools.

An RLE here is always the JSON form: ``{"size": [height, width], "counts": str}``. pycocotools hands
out ``counts`` as ``bytes``; writing those to JSON is one of the classic broken exports, so every
RLE leaving this module carries ``str`` counts. Masks are ``H x W`` bool arrays. Polygons are lists
of flat ``[x1, y1, x2, y2, ...]`` lists in continuous pixel coordinates (COCO: pixel ``(row, col)``
covers ``[col, col+1) x [row, row+1)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

RLE = dict[str, Any]
Polygon = list[float]


def _as_json(rle: dict) -> RLE:
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def _as_pycocotools(rle: RLE) -> dict:
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": list(rle["size"]), "counts": counts}


def encode(mask: np.ndarray) -> RLE:
    """Compressed RLE of an ``H x W`` mask (any dtype; nonzero is foreground)."""
    return _as_json(mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8)))


def run_lengths(counts: str) -> np.ndarray:
    """The run lengths packed in a compressed RLE ``counts`` string (pycocotools' LEB128-like code:
    5 bits a character, offset by 48, bit 5 = more follows, bit 4 of the last = sign; from the
    fourth run on, each value is stored as the difference to the run two before).

    Raises ValueError for a string that is not such a code or holds a negative run. pycocotools
    itself does not check, and decoding a bad string writes outside its buffer. A number of more
    than ``MAX_RLE_NUMBER_CHARACTERS`` is refused too: pycocotools shifts a 32-bit ``int`` by
    ``5 * k`` for the k-th character, so it would read such a number as another one.
    """
    if not counts.isascii():
        raise ValueError("RLE counts hold characters outside the compressed-RLE alphabet")
    codes = np.frombuffer(counts.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    if codes.size == 0:
        return np.zeros(0, dtype=np.int64)
    if codes.min() < 0 or codes.max() > 63:
        raise ValueError("RLE counts hold characters outside the compressed-RLE alphabet")
    last = (codes & 0x20) == 0  # the final character of each number
    if not last[-1]:
        raise ValueError("RLE counts end in the middle of a number")
    number = np.cumsum(np.concatenate([[0], last[:-1]]))  # which number each character belongs to
    starts = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    position = np.arange(codes.size) - starts[number]
    if position.max() >= MAX_RLE_NUMBER_CHARACTERS:
        raise ValueError("RLE counts hold a number too large for an image")
    values = np.zeros(int(number[-1]) + 1, dtype=np.int64)
    np.add.at(values, number, (codes & 0x1F) << (5 * position))
    negative = (codes[last] & 0x10) != 0
    values[negative] -= np.int64(1) << (5 * (position[last][negative] + 1))
    # undo the delta coding: runs 3, 5, 7, ... and 4, 6, 8, ... are running sums from runs 1 and 2
    for parity in (1, 2):
        if values.size > parity:
            values[parity::2] = np.cumsum(values[parity::2])
    if values.size and values.min() < 0:
        raise ValueError("RLE counts hold a negative run length")
    return values


# The longest number, in characters, that pycocotools reads as written (6 x 5 bits, see
# run_lengths); its encoder writes no longer ones for images of up to 2**29 pixels.
MAX_RLE_NUMBER_CHARACTERS = 6


def _without_empty_runs(runs: np.ndarray) -> np.ndarray:
    """The same mask's runs with the zero-length ones merged away (a leading 0, "starts with
    foreground", stays). pycocotools decodes empty runs, but its ``toBbox`` does not: for some it
    gives a box 2**32 pixels wide, which export then cannot write."""
    values = np.arange(runs.size) % 2  # 0 = background, 1 = foreground
    keep = runs > 0
    values, runs = values[keep], runs[keep]
    if runs.size == 0:
        return runs
    starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    merged = np.add.reduceat(runs, starts)
    return np.concatenate([[0], merged]) if values[0] == 1 else merged


def _encode_runs(runs: np.ndarray, height: int, width: int) -> RLE:
    return _as_json(mask_utils.frPyObjects({"size": [height, width], "counts": runs.tolist()}, height, width))


def validated(rle: RLE) -> RLE:
    """``rle`` as both this module and pycocotools read it. Raises ValueError unless it is a
    compressed RLE whose runs cover its size exactly; zero-length runs (after a leading one) are
    merged away, so the result may hold other ``counts`` for the same pixels."""
    height, width = (int(v) for v in rle["size"])
    runs = run_lengths(rle["counts"])
    total = int(runs.sum())
    if total != height * width:
        raise ValueError(f"RLE runs cover {total} pixels, not height*width = {height * width}")
    if runs.size > 1 and not runs[1:].all():
        return _encode_runs(_without_empty_runs(runs), height, width)
    return {"size": [height, width], "counts": rle["counts"]}


def decode(rle: RLE) -> np.ndarray:
    """The ``H x W`` bool mask of a compressed RLE."""
    return mask_utils.decode(_as_pycocotools(rle)).astype(bool)


def from_uncompressed(rle: dict) -> RLE:
    """Compressed RLE from COCO's uncompressed form ``{"size": [h, w], "counts": [int, ...]}``
    (non-negative runs covering ``h * w``; zero-length ones are merged away as in ``validated``)."""
    height, width = (int(v) for v in rle["size"])
    return _encode_runs(_without_empty_runs(np.asarray(rle["counts"], dtype=np.int64)), height, width)


def polygon_bounds(height: int, width: int) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)``: the region a coordinate of an image of this size may lie in, one
    image size beyond each side. A person partly outside the frame stays well inside it; a
    coordinate of 1e10 does not (docs/decisions/0006)."""
    margin = float(max(height, width))
    return -margin, -margin, width + margin, height + margin


Point = tuple[float, float]


def _clip(points: list[Point], inside: Callable[[Point], bool], cross: Callable[[Point, Point], Point]) -> list[Point]:
    """One Sutherland-Hodgman step: the polygon cut by one half-plane. ``cross(a, b)`` is where
    the edge from ``a`` inside to ``b`` outside leaves: measured from the inside end, so that an
    outside end at 1e300 does not round the crossing away."""
    out = []
    for k, current in enumerate(points):
        previous = points[k - 1]
        if inside(current):
            if not inside(previous):
                out.append(cross(current, previous))
            out.append(current)
        elif inside(previous):
            out.append(cross(previous, current))
    return out


def _between(a: float, b: float, t: float) -> float:
    return a * (1.0 - t) + b * t  # no overflow for any finite a and b, t in [0, 1]


def _fraction(start: float, end: float, at: float) -> float:
    """Where ``at`` lies from ``start`` to ``end``, 0..1 (halved first: ``end - start`` of two
    finite doubles can overflow)."""
    return (at / 2 - start / 2) / (end / 2 - start / 2)


def _at_x(x: float) -> Callable[[Point, Point], Point]:
    return lambda p, q: (x, _between(p[1], q[1], _fraction(p[0], q[0], x)))


def _at_y(y: float) -> Callable[[Point, Point], Point]:
    return lambda p, q: (_between(p[0], q[0], _fraction(p[1], q[1], y)), y)


def bounded_polygons(polygons: Sequence[Polygon], height: int, width: int) -> list[Polygon]:
    """``polygons`` clipped to ``polygon_bounds``; parts left with fewer than 3 points are dropped,
    and polygons inside the bounds come back unchanged.

    Clipping to a region that holds the image keeps which points of the image are inside (also
    for self-intersecting polygons, under the even-odd rule pycocotools fills by). It bounds the
    work of rasterising, which grows with the length of the outline: pycocotools takes 5 GB for a
    triangle with a corner at 4e7 and crashes on one at 1e10.
    """
    x0, y0, x1, y1 = polygon_bounds(height, width)
    half_planes = (
        (lambda p: p[0] >= x0, _at_x(x0)),
        (lambda p: p[0] <= x1, _at_x(x1)),
        (lambda p: p[1] >= y0, _at_y(y0)),
        (lambda p: p[1] <= y1, _at_y(y1)),
    )
    bounded = []
    for polygon in polygons:
        values = [float(v) for v in polygon]
        xs, ys = values[0::2], values[1::2]
        if min(xs) >= x0 and max(xs) <= x1 and min(ys) >= y0 and max(ys) <= y1:
            bounded.append(values)
            continue
        points = list(zip(xs, ys))
        for inside, cross in half_planes:
            points = _clip(points, inside, cross) if points else points
        if len(points) >= 3:
            bounded.append([v for point in points for v in point])
    return bounded


def from_polygons(polygons: Sequence[Polygon], height: int, width: int) -> RLE:
    """Compressed RLE of the union of ``polygons`` rasterised by pycocotools, as COCO does, after
    ``bounded_polygons`` (the one place this module rasterises polygons)."""
    bounded = bounded_polygons(polygons, height, width)
    if not bounded:
        return encode(np.zeros((height, width), dtype=np.uint8))
    return _as_json(mask_utils.merge(mask_utils.frPyObjects(bounded, height, width)))


def area(rle: RLE) -> int:
    """Foreground pixel count."""
    return int(mask_utils.area(_as_pycocotools(rle)))


def bbox(rle: RLE) -> tuple[float, float, float, float]:
    """Tight box ``(x, y, width, height)`` in pixels around the foreground; zeros when empty."""
    x, y, w, h = mask_utils.toBbox(_as_pycocotools(rle)).tolist()
    return float(x), float(y), float(w), float(h)


def iou(a: Sequence[RLE], b: Sequence[RLE]) -> np.ndarray:
    """Mask IoU of every mask of ``a`` with every mask of ``b`` (all of one image): ``len(a) x len(b)``."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    crowd = [0] * len(b)
    return np.asarray(mask_utils.iou([_as_pycocotools(r) for r in a], [_as_pycocotools(r) for r in b], crowd))


def merge(rles: Sequence[RLE]) -> RLE:
    """The union of several masks of one image."""
    return _as_json(mask_utils.merge([_as_pycocotools(r) for r in rles]))


def decode_crop(rle: RLE, x: int, y: int, width: int, height: int) -> np.ndarray:
    """The ``height x width`` part of the mask whose top-left pixel is ``(x, y)``, decoded without
    building the whole image (the runs are column-major, so a range of columns is one stretch)."""
    image_height = int(rle["size"][0])
    runs = run_lengths(rle["counts"])
    ends = np.cumsum(runs)
    first, last = x * image_height, (x + width) * image_height  # flat range of the columns
    lengths = np.minimum(ends, last) - np.maximum(ends - runs, first)
    keep = lengths > 0
    values = (np.arange(runs.size) % 2).astype(np.uint8)  # runs alternate 0, 1, 0, ... from 0
    columns = np.repeat(values[keep], lengths[keep]).reshape(width, image_height)
    return columns[:, y : y + height].T


def _outlines_in_quarter_pixels(rle: RLE) -> list[np.ndarray]:
    """Outer contours as flat int arrays ``[4*x1, 4*y1, 4*x2, ...]`` (exact quarter-pixel units).

    The mask is upsampled x2, so that pixel edges get integer coordinates: the contour of the
    upsampled mask runs along the centres of the doubled boundary pixels, a quarter pixel inside the
    outer edges of the boundary pixels, and rasterising it again gives back the same pixels.
    """
    x, y, w, h = (int(v) for v in bbox(rle))
    if w == 0 or h == 0:
        return []
    crop = np.pad(decode_crop(rle, x, y, w, h), 1)  # the pad keeps contours closed at the crop edge
    big = cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    # upsampled index c -> image coordinate (c + 0.5) / 2 - 1 (pad) + origin; times 4:
    offset = np.array([4 * x - 3, 4 * y - 3], dtype=np.int64)
    return [(2 * c.reshape(-1, 2).astype(np.int64) + offset).reshape(-1) for c in contours if len(c) >= 3]


_quarter_text = np.array([], dtype=object)


def polygons_json(rle: RLE) -> str:
    """The mask's outer contours as COCO polygons in compact JSON (holes are not representable
    and are dropped; parts smaller than a triangle are left out). Rasterised again, the polygons
    give back the mask's pixels with its holes filled. The coordinates are multiples of 0.25, so
    their text is looked up rather than formatted: several times faster than ``json.dumps`` for
    large exports."""
    global _quarter_text
    outlines = _outlines_in_quarter_pixels(rle)
    largest = max((int(o.max()) for o in outlines), default=0)
    if largest >= _quarter_text.size:
        _quarter_text = np.array([repr(k / 4.0) for k in range(2 * largest + 1024)], dtype=object)
    return "[" + ",".join("[" + ",".join(_quarter_text[o]) + "]" for o in outlines) + "]"
