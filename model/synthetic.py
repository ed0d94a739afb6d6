"""Synthetic instance-segmentation + keypoint data: overlapping shapes on textured backgrounds.

Used by tests, benchmarks, training smoke runs and the bundled demo. Needs numpy, OpenCV and
pycocotools only (never torch), so importing it stays cheap.

Each image shows ``min_shapes``..``max_shapes`` filled shapes of four categories (COCO ids from 1):
``ellipse``, ``rectangle``, ``triangle`` and ``star``, each 10%-45% of the shorter image side
across, randomly rotated, with its centre at least 5% of a side inside the image, so shapes overlap
each other and often cross the image border. Shapes are painted in order, each on top of the ones
before it, on a background of smooth colour noise, a linear gradient or stripes; fills are a random
colour that contrasts with what lies beneath, with a mild smooth texture and pixel noise. Shapes
carry no anti-aliasing, so every pixel belongs to exactly one layer.

Masks are exact: an instance's mask is the set of pixels its shape painted and no later shape
painted over, so the masks of one image are pairwise disjoint. An instance whose visible area falls
below ``min_visible_area`` pixels is dropped from the annotations (its few pixels stay in the
image).

Coordinates are continuous COCO image coordinates: x to the right, y down, pixel ``(row i,
column j)`` covers ``[j, j+1) x [i, i+1)``, so its centre is ``(j + 0.5, i + 0.5)``. Boxes, polygons
and keypoints all use this frame. (Loaders that follow Detectron2's habit of adding 0.5 to COCO
*person* keypoints, which are integer pixel indices, must not do so here.)

Keypoints: the same K = 5 for every category, since Mask R-CNN's keypoint head predicts one fixed
set of K heatmaps for all classes. ``KEYPOINT_NAMES`` = centre, top, right, bottom, left:

* ``centre``: the shape's area centroid (the centroid of the vertices for a triangle), continuous.
* ``top`` / ``right`` / ``bottom`` / ``left``: the shape's extreme points in the image axes, taken
  on its rasterised, unoccluded mask: the centre of the topmost (rightmost, ...) pixel, and on a tie
  (an edge parallel to an image axis) the middle pixel of that row or column. For a rectangle these
  are its four corners, for a star four of its tips, for an ellipse its axis-aligned extremes. A
  triangle has three corners, so one corner is two extreme points at once (e.g. top and left);
  the two keypoints then coincide, which a heatmap target handles without special cases.

Extreme points rather than corners numbered in each shape's own frame because a rotated rectangle
or star looks the same after a quarter or fifth of a turn: "corner 1" could not be told from the
image, while "the topmost corner" can. Extreme points also flip cleanly: a horizontal flip swaps
left and right and keeps the rest (``FLIP_MAP``).

Visibility follows COCO: ``v = 2`` when the keypoint's pixel is on the instance's visible mask,
``v = 1`` (labelled, not visible) when it is inside the image but painted over by a later shape,
``v = 0`` with ``x = y = 0`` when it lies outside the image.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, TypedDict

import cv2
import numpy as np

__all__ = [
    "CATEGORY_NAMES",
    "FLIP_MAP",
    "KEYPOINT_NAMES",
    "NUM_KEYPOINTS",
    "SKELETON",
    "SyntheticInstance",
    "coco_categories",
    "generate",
    "make_sample",
]

CATEGORY_NAMES: tuple[str, ...] = ("ellipse", "rectangle", "triangle", "star")
"""Category names; the COCO id of ``CATEGORY_NAMES[i]`` is ``i + 1``."""

KEYPOINT_NAMES: tuple[str, ...] = ("centre", "top", "right", "bottom", "left")
NUM_KEYPOINTS = len(KEYPOINT_NAMES)

SKELETON: tuple[tuple[int, int], ...] = (
    (2, 3),
    (3, 4),
    (4, 5),
    (5, 2),  # outline: top - right - bottom - left - top
    (1, 2),
    (1, 3),
    (1, 4),
    (1, 5),  # spokes from the centre
)
"""Keypoint pairs to connect when drawing, 1-based indices into ``KEYPOINT_NAMES`` (COCO)."""

FLIP_MAP: tuple[tuple[str, str], ...] = (("left", "right"),)
"""Keypoint names that trade places under a horizontal flip; the others map to themselves."""

SizeSpec = tuple[int | tuple[int, int], int | tuple[int, int]]
"""Image (height, width); either side may be an inclusive ``(low, high)`` range drawn per image."""

# fillPoly takes vertices as fixed-point integers with this many fractional bits.
_SUBPIXEL_BITS = 8
# Fill colours are redrawn (a few times) until this far, in RGB units, from what lies beneath.
_MIN_COLOUR_CONTRAST = 80.0


class SyntheticInstance(TypedDict):
    """One annotated shape of a sample from :func:`make_sample`."""

    mask: np.ndarray
    """(H, W) bool: the visible pixels of the shape."""
    category_id: int
    """COCO category id, 1-based into ``CATEGORY_NAMES``."""
    keypoints: np.ndarray
    """(K, 3) float64: x, y (continuous image coordinates) and COCO visibility v in {0, 1, 2}."""


def coco_categories() -> list[dict[str, Any]]:
    """The COCO ``categories`` list: id, name, supercategory ``"shape"``, keypoints, skeleton."""
    return [
        {
            "id": index + 1,
            "name": name,
            "supercategory": "shape",
            "keypoints": list(KEYPOINT_NAMES),
            "skeleton": [list(pair) for pair in SKELETON],
        }
        for index, name in enumerate(CATEGORY_NAMES)
    ]


# --- shapes --------------------------------------------------------------------------------------


def _shape_outline(rng: np.random.Generator, category: str, diameter: float) -> np.ndarray:
    """(N, 2) polygon vertices in pixels, unrotated, with the shape's centroid at the origin."""
    radius = diameter / 2
    if category == "ellipse":
        minor = radius * rng.uniform(0.45, 1.0)
        # about one vertex per 3 px of arc keeps the polygon within 0.1 px of the true ellipse
        count = max(24, int(np.ceil(2 * np.pi * radius / 3)))
        angles = np.linspace(0, 2 * np.pi, count, endpoint=False)
        return np.stack([radius * np.cos(angles), minor * np.sin(angles)], axis=1)
    if category == "rectangle":
        half_w, half_h = radius, radius * rng.uniform(0.35, 1.0)
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * (half_w, half_h)
    if category == "triangle":
        # corners on a circle, about 120 degrees apart, so no angle gets needle-thin
        angles = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.5, 0.5, 3)
        radii = radius * rng.uniform(0.8, 1.0, 3)
        corners = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
        return corners - corners.mean(axis=0)
    if category == "star":
        points = 5
        inner = radius * rng.uniform(0.38, 0.5)
        angles = np.arange(2 * points) * (np.pi / points)
        radii = np.where(np.arange(2 * points) % 2 == 0, radius, inner)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    raise ValueError(f"unknown shape category {category!r}")


def _rasterize(polygon: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Fill a polygon given in continuous image coordinates.

    Returns a bool mask over the polygon's own bounding window (which may extend past any image)
    and the window's top-left pixel (x0, y0), so that ``mask[i, j]`` is image pixel
    ``(y0 + i, x0 + j)``. A pixel is in when OpenCV's 8-connected fill covers its centre.
    """
    corners = polygon - 0.5  # OpenCV puts pixel centres at integer coordinates
    x0 = int(np.floor(corners[:, 0].min())) - 1
    y0 = int(np.floor(corners[:, 1].min())) - 1
    x1 = int(np.ceil(corners[:, 0].max())) + 2
    y1 = int(np.ceil(corners[:, 1].max())) + 2
    window = np.zeros((y1 - y0, x1 - x0), np.uint8)
    fixed_point = np.round((corners - (x0, y0)) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(window, [fixed_point], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return window.astype(bool), x0, y0


def _extreme_points(window: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """(4, 2) centres of the top, right, bottom and left extreme pixels of a window mask.

    On a tie the middle pixel of the extreme row or column is taken (the lower of the two middle
    ones for an even count), so the point is always a pixel of the mask.
    """
    rows = np.flatnonzero(window.any(axis=1))
    cols = np.flatnonzero(window.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1], cols[0], cols[-1]

    def middle(indices: np.ndarray) -> int:
        return int(indices[(len(indices) - 1) // 2])

    points = [
        (middle(np.flatnonzero(window[top])), top),
        (right, middle(np.flatnonzero(window[:, right]))),
        (middle(np.flatnonzero(window[bottom])), bottom),
        (left, middle(np.flatnonzero(window[:, left]))),
    ]
    return np.array(points, np.float64) + (x0 + 0.5, y0 + 0.5)


# --- textures ------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """(H, W) float32 noise of about unit amplitude, with about ``cells`` blobs per side."""
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _stripes(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W) float32 in [0, 1]: parallel stripes at a random angle, period and edge sharpness."""
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(6.0, 48.0)
    sharpness = rng.uniform(0.5, 4.0)
    ys, xs = np.ogrid[0:height, 0:width]
    offset = rng.uniform(0, 2 * np.pi)
    phase = (xs * np.cos(angle) + ys * np.sin(angle)) * (2 * np.pi / period) + offset
    wave = np.tanh(sharpness * np.sin(phase)) / np.tanh(sharpness)
    return (0.5 + 0.5 * wave).astype(np.float32)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(15, 240, 3).astype(np.float32)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32 RGB in about [0, 255]: colour noise, a gradient or stripes, plus noise."""
    kind = rng.integers(3)
    if kind == 0:
        cells = (int(rng.integers(2, 7)), int(rng.integers(2, 7)))
        grid = rng.uniform(0, 255, (*cells, 3)).astype(np.float32)
        image = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    else:
        if kind == 1:
            angle = rng.uniform(0, 2 * np.pi)
            ys, xs = np.ogrid[0:height, 0:width]
            ramp = (xs * np.cos(angle) + ys * np.sin(angle)).astype(np.float32)
            weight = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1.0)
        else:
            weight = _stripes(rng, height, width)
        first, second = _random_colour(rng), _random_colour(rng)
        image = first + weight[..., None] * (second - first)
    shading = rng.uniform(0, 25) * _smooth_noise(rng, height, width, int(rng.integers(2, 8)))
    grain = rng.uniform(2, 8) * rng.standard_normal((height, width, 3), np.float32)
    return image + shading[..., None] + grain


def _shape_fill(rng: np.random.Generator, colour: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32: a flat colour, a mild smooth texture, sometimes faint stripes, grain."""
    shading = rng.uniform(6, 25) * _smooth_noise(rng, height, width, int(rng.integers(1, 5)))
    if rng.random() < 0.3:
        shading += rng.uniform(8, 20) * (_stripes(rng, height, width) - 0.5)
    grain = rng.uniform(1.5, 6) * rng.standard_normal((height, width, 3), np.float32)
    return colour + shading[..., None] + grain


def _contrasting_colour(rng: np.random.Generator, beneath: np.ndarray) -> np.ndarray:
    """A random colour at least ``_MIN_COLOUR_CONTRAST`` from the mean RGB ``beneath``, if a few
    draws find one, else the farthest of them."""
    best, best_distance = beneath, -1.0
    for _ in range(8):
        colour = _random_colour(rng)
        distance = float(np.linalg.norm(colour - beneath))
        if distance >= _MIN_COLOUR_CONTRAST:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best


# --- samples -------------------------------------------------------------------------------------


def make_sample(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    min_shapes: int = 2,
    max_shapes: int = 6,
    shape_size: tuple[float, float] = (0.10, 0.45),
    min_visible_area: int = 30,
) -> tuple[np.ndarray, list[SyntheticInstance]]:
    """Render one image in memory.

    Args:
        rng: the only source of randomness; the same generator state gives the same sample.
        height, width: image size in pixels.
        min_shapes, max_shapes: inclusive range of the number of shapes painted. Instances whose
            visible area ends below ``min_visible_area`` pixels are dropped afterwards, so fewer
            may be returned.
        shape_size: range of a shape's diameter (a rectangle's long side, an ellipse's major axis,
            a triangle's or star's circumscribed circle), as a fraction of ``min(height, width)``.
        min_visible_area: smallest visible area, in pixels, of a returned instance.

    Returns:
        ``image``: (H, W, 3) uint8 RGB. ``instances``: the surviving shapes in painting order
        (bottom first), each with its (H, W) bool visible ``mask``, ``category_id`` and (K, 3)
        ``keypoints`` as described in the module docstring.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if not 0 <= min_shapes <= max_shapes:
        raise ValueError(f"need 0 <= min_shapes <= max_shapes, got {min_shapes}, {max_shapes}")

    image = _background(rng, height, width)
    # index of the shape that painted each pixel last, -1 for background
    owner = np.full((height, width), -1, np.int32)
    painted: list[tuple[int, np.ndarray]] = []  # (category id, (K, 2) keypoints) per shape

    for _ in range(int(rng.integers(min_shapes, max_shapes + 1))):
        category = int(rng.integers(len(CATEGORY_NAMES)))
        diameter = rng.uniform(*shape_size) * min(height, width)
        outline = _shape_outline(rng, CATEGORY_NAMES[category], diameter)
        angle = rng.uniform(0, 2 * np.pi)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        # centres keep a 5% margin: many shapes still cross the border, few are mostly outside
        centre = rng.uniform((0.05 * width, 0.05 * height), (0.95 * width, 0.95 * height))
        window, x0, y0 = _rasterize(outline @ rotation.T + centre)

        # the part of the window that lies inside the image
        left, top = max(x0, 0), max(y0, 0)
        right, bottom = min(x0 + window.shape[1], width), min(y0 + window.shape[0], height)
        inside = window[top - y0 : bottom - y0, left - x0 : right - x0]
        if not inside.any():  # only for shapes under a pixel across
            continue
        region = image[top:bottom, left:right]
        colour = _contrasting_colour(rng, region[inside].mean(axis=0))
        region[inside] = _shape_fill(rng, colour, bottom - top, right - left)[inside]
        owner[top:bottom, left:right][inside] = len(painted)

        keypoints = np.concatenate([centre[None], _extreme_points(window, x0, y0)])
        painted.append((category + 1, keypoints))

    instances: list[SyntheticInstance] = []
    for index, (category_id, points) in enumerate(painted):
        mask = owner == index
        if int(mask.sum()) < min_visible_area:
            continue
        keypoints = np.zeros((NUM_KEYPOINTS, 3))
        for k, (x, y) in enumerate(points):
            if 0 <= x < width and 0 <= y < height:
                keypoints[k] = (x, y, 2 if mask[int(y), int(x)] else 1)
        instances.append({"mask": mask, "category_id": category_id, "keypoints": keypoints})

    return np.clip(np.rint(image), 0, 255).astype(np.uint8), instances


# --- COCO files ----------------------------------------------------------------------------------


def _draw_side(rng: np.random.Generator, side: int | tuple[int, int]) -> int:
    if isinstance(side, (int, np.integer)):
        low = high = side
    else:
        low, high = side
    if not 1 <= low <= high:
        raise ValueError(f"image side must be a positive int or a (low, high) range, got {side!r}")
    return low if low == high else int(rng.integers(low, high + 1))


def _coco_annotations(instances: list[SyntheticInstance], image_id: int, first_id: int) -> list[dict[str, Any]]:
    """COCO annotation records with compressed RLE masks; area and bbox come from the RLE."""
    if not instances:
        return []
    stacked = np.asfortranarray(np.stack([inst["mask"] for inst in instances], axis=-1), np.uint8)
    # imported here: building the small architecture reads this module's names, and the GPU
    # machine has no pycocotools (bench/gpu_check.py)
    from pycocotools import mask as mask_utils

    rles = mask_utils.encode(stacked)
    areas = mask_utils.area(rles)
    boxes = mask_utils.toBbox(rles)
    records = []
    for offset, (instance, rle) in enumerate(zip(instances, rles)):
        keypoints = instance["keypoints"]
        records.append(
            {
                "id": first_id + offset,
                "image_id": image_id,
                "category_id": instance["category_id"],
                "segmentation": {
                    "size": [int(side) for side in rle["size"]],
                    "counts": rle["counts"].decode("ascii"),
                },
                "area": int(areas[offset]),
                "bbox": [float(v) for v in boxes[offset]],
                "iscrowd": 0,
                "keypoints": [value for x, y, v in keypoints for value in (float(x), float(y), int(v))],
                "num_keypoints": int(np.count_nonzero(keypoints[:, 2])),
            }
        )
    return records


def generate(
    out_dir: Path,
    num_images: int,
    *,
    seed: int,
    size: SizeSpec = (320, 320),
    min_shapes: int = 2,
    max_shapes: int = 6,
    shape_size: tuple[float, float] = (0.10, 0.45),
    min_visible_area: int = 30,
    image_format: Literal["png", "jpg"] = "png",
    jpeg_quality: int = 95,
) -> Path:
    """Write a synthetic COCO data set: ``out_dir/images/*`` and ``out_dir/annotations.json``.

    Args:
        out_dir: created if missing; files of an earlier run with the same names are replaced.
        num_images: number of images; image ids run from 1.
        seed: non-negative. Image ``n`` is drawn from its own generator seeded with
            ``(seed, n)``, so the first images do not depend on ``num_images``.
        size: image (height, width) in pixels; each side may be an inclusive ``(low, high)``
            range drawn per image, e.g. ``((240, 400), 320)``.
        min_shapes, max_shapes, shape_size, min_visible_area: as in :func:`make_sample`.
        image_format: ``"png"`` (lossless: pixels match the masks exactly) or ``"jpg"``.
        jpeg_quality: 0-100, for ``"jpg"`` only.

    Returns:
        The path of ``annotations.json``. Segmentations are compressed RLE with ``counts`` as
        str; keypoints are continuous image coordinates (see the module docstring).
    """
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    write_params = (
        [cv2.IMWRITE_PNG_COMPRESSION, 1] if image_format == "png" else [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    )

    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in range(num_images):
        rng = np.random.default_rng([seed, index])
        height, width = _draw_side(rng, size[0]), _draw_side(rng, size[1])
        image, instances = make_sample(
            rng,
            height,
            width,
            min_shapes=min_shapes,
            max_shapes=max_shapes,
            shape_size=shape_size,
            min_visible_area=min_visible_area,
        )
        image_id = index + 1
        file_name = f"{image_id:06d}.{image_format}"
        image_path = image_dir / file_name
        if not cv2.imwrite(str(image_path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), write_params):
            raise OSError(f"could not write {image_path}")
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        annotations.extend(_coco_annotations(instances, image_id, first_id=len(annotations) + 1))

    dataset = {
        "info": {
            "description": "synthetic shapes (model.synthetic)",
            "seed": seed,
            "keypoint_coordinates": "continuous, pixel (row i, col j) covers [j, j+1) x [i, i+1)",
        },
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(),
    }
    path = out_dir / "annotations.json"
    # write beside and rename, so a reader never sees a half-written file
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(dataset))
    os.replace(partial, path)
    return path
