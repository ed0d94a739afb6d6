"""An instance's geometry as the store keeps it, from what a tool or a file gives: a mask, an RLE,
polygons or only a box, and keypoints. No Qt.

The mask gives the box and the area, except that a box given with the mask (an imported file's
own) is kept, with the area given with it, when it holds the mask: pose datasets box the whole
person, occluded parts included. Whatever passes here can be exported: every number is finite
and the RLE reads the same in pycocotools as here (``masks.validated``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from annotator import masks
from annotator.records import Category, ImageRecord
from annotator.schema import MAX_ID

Box = tuple[float, float, float, float]


def check_id(id: int | None, what: str) -> None:
    """Raises ValueError unless ``id`` is None (the store picks one) or an id the store can hold
    and continue from."""
    if id is not None and not 1 <= id <= MAX_ID:
        raise ValueError(f"{what} id must be at least 1 and at most {MAX_ID}, got {id}")


def box_holds(box: Sequence[float], inner: Sequence[float]) -> bool:
    """Whether ``box`` holds the pixel box ``inner`` (both ``x, y, width, height``), its edges
    rounded outward to whole pixels: the pixels pycocotools fills for a polygon lie within the
    polygon's extent rounded so, and COCO files give polygons' extents as their boxes."""
    x, y, width, height = box
    ix, iy, iwidth, iheight = inner
    return (
        math.floor(x) <= ix
        and math.floor(y) <= iy
        and math.ceil(x + width) >= ix + iwidth
        and math.ceil(y + height) >= iy + iheight
    )


def _box(values: Sequence[float], image: ImageRecord) -> Box:
    box = tuple(float(v) for v in values)
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] < 0 or box[3] < 0:
        raise ValueError(f"box {list(box)} must be 4 finite numbers x, y, width, height, width and height >= 0")
    x0, y0, x1, y1 = masks.polygon_bounds(image.height, image.width)
    if box[0] < x0 or box[1] < y0 or box[0] + box[2] > x1 or box[1] + box[3] > y1:
        raise ValueError(
            f"box {list(box)} reaches more than one image size outside the {image.width}x{image.height} image"
        )
    return box  # type: ignore[return-value]


def _mask_rle(
    image: ImageRecord, mask: np.ndarray | None, rle: masks.RLE | None, polygons: list[list[float]] | None
) -> masks.RLE | None:
    size = [image.height, image.width]
    if mask is not None:
        if tuple(mask.shape) != tuple(size):
            raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]}, image is {image.width}x{image.height}")
        return masks.encode(mask)
    if polygons is not None:
        return masks.from_polygons(polygons, image.height, image.width)
    if rle is not None:
        if list(rle["size"]) != size:
            raise ValueError(f"mask size {list(rle['size'])} differs from the image's {size}")
        return masks.validated(rle)
    return None


def instance_geometry(
    image: ImageRecord,
    category: Category,
    *,
    mask: np.ndarray | None,
    rle: masks.RLE | None,
    polygons: Sequence[Sequence[float]] | None,
    bbox: Sequence[float] | None,
    area: float | None,
    keypoints: Sequence[float] | np.ndarray | None,
) -> dict[str, Any]:
    """An instance's geometry as the store keeps it (``rle_counts``, ``bbox``, ``area``,
    ``keypoints``, ``polygons``), checked against its image and category; ValueError when they
    do not fit. Polygons are kept as ``masks.bounded_polygons`` leaves them."""
    given = [name for name, value in (("mask", mask), ("rle", rle), ("polygons", polygons)) if value is not None]
    if len(given) > 1:
        raise ValueError(f"give one of mask, rle or polygons, not {' and '.join(given)}")
    if polygons is not None:
        polygons = [[float(v) for v in polygon] for polygon in polygons]
        for polygon in polygons:
            if len(polygon) < 6 or len(polygon) % 2:
                raise ValueError("a polygon needs at least 3 points as [x1, y1, x2, y2, ...]")
        polygons = masks.bounded_polygons(polygons, image.height, image.width)
    rle = _mask_rle(image, mask, rle, polygons)
    box = None if bbox is None else _box(bbox, image)
    if area is not None and not (math.isfinite(area) and area >= 0):
        raise ValueError(f"area {area} must be a finite number >= 0")
    if rle is not None:
        mask_box = masks.bbox(rle)
        if box is None or mask_box[2] == 0 or not box_holds(box, mask_box):
            box, area = mask_box, None
        area = float(masks.area(rle)) if area is None else area
    elif box is not None:
        area = box[2] * box[3] if area is None else area
    else:
        raise ValueError("an instance needs a mask, polygons or at least a box")
    flat = None
    if keypoints is not None:
        flat = [float(v) for v in np.asarray(keypoints, dtype=np.float64).reshape(-1)]
        if len(flat) != 3 * category.num_keypoints:
            raise ValueError(
                f"category '{category.name}' has {category.num_keypoints} keypoints; "
                f"got {len(flat) // 3 if len(flat) % 3 == 0 else len(flat) / 3:g}"
            )
        if not all(math.isfinite(v) for v in flat):
            raise ValueError("keypoints must be finite numbers")
    elif category.num_keypoints:
        flat = [0.0] * (3 * category.num_keypoints)
    return {
        "rle_counts": None if rle is None else rle["counts"],
        "bbox": list(box),
        "area": float(area),
        "keypoints": flat,
        "polygons": polygons or None,
    }
