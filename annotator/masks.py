"""Instance masks as COCO compressed RLE, through pycocotools.

An RLE here is always the JSON form: ``{"size": [height, width], "counts": str}``. pycocotools hands
out ``counts`` as ``bytes``; writing those to JSON is one of the classic broken exports, so every
RLE leaving this module carries ``str`` counts. Masks are ``H x W`` bool arrays. Polygons are lists
of flat ``[x1, y1, x2, y2, ...]`` lists in continuous pixel coordinates (COCO: pixel ``(row, col)``
covers ``[col, col+1) x [row, row+1)``).
"""

from __future__ import annotations

from typing import Any, Sequence

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
    itself does not check, and decoding a bad string writes outside its buffer.
    """
    codes = np.frombuffer(counts.encode("ascii", errors="replace"), dtype=np.uint8).astype(np.int64) - 48
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
    if position.max() > 11:
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


def check(rle: RLE) -> None:
    """Raises ValueError unless ``rle`` is a compressed RLE whose runs cover its size exactly."""
    height, width = rle["size"]
    total = int(run_lengths(rle["counts"]).sum())
    if total != height * width:
        raise ValueError(f"RLE runs cover {total} pixels, not height*width = {height * width}")


def decode(rle: RLE) -> np.ndarray:
    """The ``H x W`` bool mask of a compressed RLE."""
    return mask_utils.decode(_as_pycocotools(rle)).astype(bool)


def from_uncompressed(rle: dict) -> RLE:
    """Compressed RLE from COCO's uncompressed form ``{"size": [h, w], "counts": [int, ...]}``."""
    height, width = rle["size"]
    return _as_json(mask_utils.frPyObjects(rle, height, width))


def from_polygons(polygons: Sequence[Polygon], height: int, width: int) -> RLE:
    """Compressed RLE of the union of ``polygons`` rasterised by pycocotools, as COCO does."""
    parts = mask_utils.frPyObjects([list(map(float, p)) for p in polygons], height, width)
    return _as_json(mask_utils.merge(parts))


def area(rle: RLE) -> int:
    """Foreground pixel count."""
    return int(mask_utils.area(_as_pycocotools(rle)))


def bbox(rle: RLE) -> tuple[float, float, float, float]:
    """Tight box ``(x, y, width, height)`` in pixels around the foreground; zeros when empty."""
    x, y, w, h = mask_utils.toBbox(_as_pycocotools(rle)).tolist()
    return float(x), float(y), float(w), float(h)


def merge(rles: Sequence[RLE]) -> RLE:
    """The union of several masks of one image."""
    return _as_json(mask_utils.merge([_as_pycocotools(r) for r in rles]))


def to_polygons(rle: RLE) -> list[Polygon]:
    """Outer contours of the mask as polygons (holes are not representable and are dropped).

    Vertices sit on the outer corners of the boundary pixels, so rasterising the polygons again
    gives back nearly the same pixels; parts smaller than a triangle are left out.
    """
    mask = decode(rle)
    if not mask.any():
        return []
    x, y, w, h = (int(v) for v in bbox(rle))
    # Decode once, contour the crop only; a 1-pixel pad keeps the contour closed at the crop edge.
    crop = np.pad(mask[y : y + h, x : x + w].astype(np.uint8), 1)
    # Upsample x2 so that pixel edges get integer coordinates: the contour of the upsampled mask
    # runs along centres of the doubled boundary pixels, i.e. a quarter pixel inside the edge.
    big = cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons: list[Polygon] = []
    for contour in contours:
        if len(contour) < 3:
            continue
        points = contour.reshape(-1, 2).astype(np.float64)
        # (upsampled centre) / 2 -> crop coordinates; -1 undoes the pad; + origin of the crop
        points = (points + 0.5) / 2.0 - 1.0
        points[:, 0] += x
        points[:, 1] += y
        polygons.append([round(v, 2) for v in points.reshape(-1).tolist()])
    return polygons
