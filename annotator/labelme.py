"""Importing a folder of labelme JSON files into a project. No Qt.

labelme stores one JSON file per image, each with a list of shapes (``polygon``, ``rectangle``,
``oriented_rectangle``, ``circle``, ``point``, ``mask``, ``line``, ``linestrip``, ``points``).
Here, as labelme's own converter (``labelme2coco``) reads them:

- area shapes (polygon, rectangle, oriented rectangle, circle, mask) with the same ``group_id``
  and the same label become one instance, the union of their areas; a shape without a
  ``group_id`` is an instance of its own. A group holding several labels becomes one instance per
  label, with a warning;
- ``point`` shapes in a group become keypoints of the group's (first) instance, matched by label
  to the keypoint names of its category. A category that is new to the project takes its keypoint
  names from the point labels seen with it, in order of first appearance (labelme has no schema);
- shapes labelled ``__ignore__`` are no class (labelme's converters leave them out): they are left
  out with a warning. So are lines, and points that belong to no area: they are not instances.

Polygons and rectangles keep their outline (exported as the same polygon); a circle becomes a
64-gon, bounded like every polygon (``masks.bounded_polygons``). A mask is pasted as labelme does:
at its first corner rounded to the nearest pixel (ties to even); with whole-number corners it is
cut to the box they span, both inclusive. The whole folder is checked before anything is written,
and then written in one transaction.
"""

from __future__ import annotations

import base64
import io
import math
import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from annotator import masks
from annotator.interchange import Duplicates, ImportReport, add_image_file, check_coordinates, is_number, read_json
from annotator.store import Project, ReviewState, check_file_name
from model.errors import InputError
from model.images import DEFAULT_MAX_PIXELS

AREA_SHAPES = ("polygon", "rectangle", "oriented_rectangle", "circle", "mask")
NOT_INSTANCES = ("line", "linestrip", "points")
IGNORE_LABEL = "__ignore__"  # labelme's label for regions that belong to no class
CIRCLE_VERTICES = 64

# Unicode categories of control characters and line and paragraph separators: text holding them
# cannot be shown on one line of an error message or a category list (``read_json`` has refused
# unpaired surrogates already)
_LINE_BREAKING = ("Cc", "Zl", "Zp")


@dataclass
class _Group:
    """The shapes of one instance in one labelme file: one label of one ``group_id``."""

    label: str | None = None
    polygons: list[list[float]] = field(default_factory=list)
    mask_parts: list[tuple[np.ndarray, int, int]] = field(default_factory=list)  # (crop, x, y)
    points: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class _File:
    path: Path
    file_name: str
    size: tuple[int, int]  # (width, height) as the file says
    groups: list[_Group]
    warnings: list[str]


def _flat(points: list[list[float]]) -> list[float]:
    return [v for point in points for v in point]


def _check_text(text: str, what: str, problem: Callable[[str], InputError]) -> None:
    if any(unicodedata.category(c) in _LINE_BREAKING for c in text):
        raise problem(f"{what} {text!r} holds a control character or a line break")


def _circle_outline(
    centre: list[float], rim: list[float], width: int, height: int, problem: Callable[[str], InputError]
) -> list[float] | None:
    """The circle through ``rim`` around ``centre`` as a 64-gon, clipped to the region polygons
    are bounded to (``masks.polygon_bounds``); None when none of it lies there."""
    (cx, cy), (px, py) = centre, rim
    radius = math.hypot(px - cx, py - cy)
    x0, y0, x1, y1 = masks.polygon_bounds(height, width)
    inscribed = radius * math.cos(math.pi / CIRCLE_VERTICES)  # the 64-gon holds this circle
    if all(math.hypot(x - cx, y - cy) <= inscribed for x in (x0, x1) for y in (y0, y1)):
        return [x0, y0, x1, y0, x1, y1, x0, y1]  # covers the whole region; also for radii near 1e308
    angles = np.linspace(0.0, 2.0 * math.pi, CIRCLE_VERTICES, endpoint=False)
    with np.errstate(over="ignore", invalid="ignore"):
        ring = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1).reshape(-1)
    if not np.isfinite(ring).all():  # a rim through the region, a centre near 1e308: no float holds the 64-gon
        raise problem(f"circle of radius {radius:g} around ({cx:g}, {cy:g}) is too large to draw")
    bounded = masks.bounded_polygons([ring.tolist()], height, width)
    return [round(v, 3) for v in bounded[0]] if bounded else None


def _mask_part(
    shape: dict, points: list[list[float]], size: tuple[int, int], problem: Callable[[str], InputError]
) -> tuple[np.ndarray, int, int]:
    """``(crop, x, y)``: a mask shape's pixels and the image pixel its top-left one lands on, as
    labelme's ``shapes_to_label`` places them. The PNG is refused by its header's size (a few
    kilobytes of PNG can declare gigapixels) before it is decoded."""
    if len(points) != 2 or not isinstance(shape.get("mask"), str):
        raise problem("mask shape needs its box as 2 points and a base64 PNG 'mask'")
    width, height = size
    try:
        png = Image.open(io.BytesIO(base64.b64decode(shape["mask"], validate=True)), formats=("PNG",))
    except Exception:  # binascii and PIL raise several types
        raise problem("'mask' is not a base64-encoded PNG image") from None
    if png.width > width or png.height > height:
        raise problem(f"'mask' is a {png.width}x{png.height} PNG, larger than the {width}x{height} image")
    try:
        crop = np.asarray(png)
    except Exception:  # PIL raises several types for damaged data
        raise problem("'mask' is not a base64-encoded PNG image") from None
    if crop.ndim == 3:
        crop = crop[..., 0]
    (x1, x2), (y1, y2) = (sorted((points[0][i], points[1][i])) for i in (0, 1))
    if all(float(v).is_integer() for v in (x1, y1, x2, y2)):  # labelme cuts the PNG to whole-pixel corners
        crop = crop[: max(int(y2 - y1) + 1, 0), : max(int(x2 - x1) + 1, 0)]
    return crop > 0, round(x1), round(y1)  # round() ties to even, as numpy's round in labelme


def _shape_area(
    shape: dict,
    shape_type: str,
    points: list[list[float]],
    group: _Group,
    size: tuple[int, int],
    problem: Callable[[str], InputError],
) -> bool:
    """Adds one area shape to ``group``; False for a circle that lies wholly outside the image."""
    if shape_type == "polygon":
        if len(points) < 3:
            raise problem(f"polygon has {len(points)} points; it needs at least 3")
        group.polygons.append(_flat(points))
    elif shape_type == "oriented_rectangle":
        if len(points) != 4:
            raise problem(f"oriented rectangle needs 4 corner points, got {len(points)}")
        group.polygons.append(_flat(points))
    elif shape_type == "rectangle":
        if len(points) != 2:
            raise problem(f"rectangle needs 2 corner points, got {len(points)}")
        (x1, y1), (x2, y2) = points
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        group.polygons.append([x1, y1, x2, y1, x2, y2, x1, y2])
    elif shape_type == "circle":
        if len(points) != 2:
            raise problem(f"circle needs a centre and a point on its rim, got {len(points)} points")
        outline = _circle_outline(points[0], points[1], *size, problem)
        if outline is None:
            return False
        group.polygons.append(outline)
    else:  # mask
        group.mask_parts.append(_mask_part(shape, points, size, problem))
    return True


def _image_of(path: Path, data: dict, image_root: Path, max_pixels: int) -> tuple[str, tuple[int, int]]:
    """The file's image: its name relative to ``image_root`` and ``(width, height)`` as declared."""
    image_path = data.get("imagePath")
    if not isinstance(image_path, str) or not image_path:
        raise InputError(path, "missing 'imagePath'")
    _check_text(image_path, "imagePath", lambda text: InputError(path, text))
    size = (data.get("imageWidth"), data.get("imageHeight"))
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise InputError(path, "'imageWidth' and 'imageHeight' must be positive integers")
    width, height = size
    if width * height > max_pixels:  # before any mask in the file is decoded to that size
        raise InputError(
            path,
            f"declares a {width}x{height} image, over the limit of {max_pixels / 1e6:.0f} "
            "megapixels (raise it with --max-pixels)",
        )
    # imagePath is relative to the JSON file; the project stores it relative to the image root.
    # Lexically, as COCO's file_name: an image that is a symlink (git-annex, DVC) stays in the folder.
    relative_to_json = image_path.replace("\\", "/")
    if Path(relative_to_json).is_absolute():
        raise InputError(path, f"imagePath {image_path!r} is absolute; it must be relative to the JSON file")
    located = Path(os.path.normpath(path.parent.resolve() / relative_to_json))
    try:
        file_name = check_file_name(located.relative_to(image_root).as_posix())
    except ValueError:
        raise InputError(path, f"imagePath {image_path!r} points outside the image folder {image_root}") from None
    return file_name, (width, height)


def _problem_in(path: Path, where: str) -> Callable[[str], InputError]:
    return lambda text: InputError(path, f"{where}: {text}")


def _read_shapes(path: Path, shapes: list, size: tuple[int, int]) -> tuple[list[_Group], list[str]]:
    """The file's instances (in order of their first shape) and the warnings about what is left out."""
    areas: dict[tuple[Any, str], _Group] = {}  # ((group key), label) -> instance
    points: dict[Any, dict[str, tuple[float, float]]] = {}  # group key -> keypoints
    warnings, ignored = [], 0
    for index, shape in enumerate(shapes):
        where = f"shapes[{index}]"
        problem = _problem_in(path, where)
        if not isinstance(shape, dict):
            raise problem("must be an object")
        label = shape.get("label")
        if not isinstance(label, str) or not label.strip():
            raise problem("'label' must be a non-empty string")
        _check_text(label, "'label'", problem)
        shape_type = shape.get("shape_type") or "polygon"
        if shape_type not in (*AREA_SHAPES, *NOT_INSTANCES, "point"):
            raise problem(f"unknown shape_type {shape_type!r}")
        group_id = shape.get("group_id")
        if group_id is not None and not is_number(group_id):
            raise problem("'group_id' must be a number or null")
        shape_points = shape.get("points")
        if not isinstance(shape_points, list) or not all(isinstance(p, list) and len(p) == 2 for p in shape_points):
            raise problem("'points' must be a list of [x, y] pairs")
        check_coordinates(_flat(shape_points), "'points'", problem, negative=True)  # as labelme, any finite
        if label == IGNORE_LABEL:
            ignored += 1
            continue
        if shape_type in NOT_INSTANCES:
            warnings.append(f"{path}: {where}: {shape_type} '{label}' is not an instance; left out")
            continue
        key = ("group", group_id) if group_id is not None else ("shape", index)
        if shape_type == "point":
            if len(shape_points) != 1:
                raise problem(f"a point shape has one point, got {len(shape_points)}")
            named = points.setdefault(key, {})
            if label in named:
                raise problem(f"group {group_id} has two points labelled '{label}'")
            named[label] = (float(shape_points[0][0]), float(shape_points[0][1]))
            continue
        group = areas.get((key, label)) or _Group(label)
        if _shape_area(shape, shape_type, shape_points, group, size, problem):
            areas[(key, label)] = group
        else:
            warnings.append(f"{path}: {where}: circle '{label}' lies outside the image; left out")
    if ignored:
        warnings.append(
            f"{path}: left out {ignored} shape(s) labelled {IGNORE_LABEL} (labelme's mark for "
            "regions of no class; its converters leave them out too)"
        )
    return _attach_points(path, areas, points, warnings), warnings


def _attach_points(
    path: Path,
    areas: dict[tuple[Any, str], _Group],
    points: dict[Any, dict[str, tuple[float, float]]],
    warnings: list[str],
) -> list[_Group]:
    """Gives each group's points to its first instance, and warns about groups split by label
    (labelme's converter makes one instance per label and group)."""
    labels: dict[Any, list[str]] = {}
    for key, label in areas:
        labels.setdefault(key, []).append(label)
    for key, names in labels.items():
        if len(names) > 1:
            with_points = f"; its points go with '{names[0]}'" if key in points else ""
            warnings.append(
                f"{path}: group {key[1]} holds the labels {', '.join(map(repr, names))}: "
                f"imported as {len(names)} instances, as labelme's converter does{with_points}"
            )
    groups = list(areas.values())
    for key, named in points.items():
        if key in labels:
            areas[(key, labels[key][0])].points = named
        else:
            groups.append(_Group(points=named))
    return groups


def _read_file(path: Path, image_root: Path, max_pixels: int) -> _File:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise InputError(path, "not a labelme file: no 'shapes' list")
    file_name, size = _image_of(path, data, image_root, max_pixels)
    groups, warnings = _read_shapes(path, data["shapes"], size)
    return _File(path, file_name, size, groups, warnings)


def _mask_of(group: _Group, height: int, width: int) -> np.ndarray:
    """The union of a group's mask shapes and polygons, ``height x width`` bool; each PNG pasted
    at its pixel, the parts outside the image cut off."""
    mask = np.zeros((height, width), dtype=bool)
    for crop, x, y in group.mask_parts:
        top, left = max(y, 0), max(x, 0)
        bottom, right = min(y + crop.shape[0], height), min(x + crop.shape[1], width)
        if top < bottom and left < right:
            mask[top:bottom, left:right] |= crop[top - y : bottom - y, left - x : right - x]
    if group.polygons:
        mask |= masks.decode(masks.from_polygons(group.polygons, height, width))
    return mask


def import_labelme(
    project: Project, folder: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS, duplicates: Duplicates = "skip"
) -> ImportReport:
    """Imports every ``*.json`` labelme file under ``folder`` (recursively); all or nothing. A FIFO,
    a device (a link to ``/dev/zero``) or a folder of that name is refused in one line unread
    (``read_json`` reads regular files only). With ``duplicates="skip"`` a shape the image holds
    already (same category and mask) is counted in ``report.duplicates`` and not added again, so
    importing a folder twice does not double its instances."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a folder of labelme JSON files")
    paths = sorted(folder.rglob("*.json"))
    if not paths:
        raise InputError(folder, "no labelme .json files in this folder")
    files = [_read_file(path, project.image_root, max_pixels) for path in paths]
    report = ImportReport()
    add = project.add_instance_if_new if duplicates == "skip" else project.add_instance
    with project.transaction():  # the categories read here are those the import adds to
        # Keypoint names for categories new to the project: the point labels seen with them. (One
        # only the model proposed is new too: the file's takes its place, Project.add_category.)
        existing = {c.name: c for c in project.kept_categories()}
        new_keypoints: dict[str, list[str]] = {}
        for file in files:
            for group in file.groups:
                if group.label is not None and group.label not in existing:
                    names = new_keypoints.setdefault(group.label, [])
                    names.extend(name for name in group.points if name not in names)
        categories = dict(existing)
        for name, keypoints in new_keypoints.items():
            categories[name] = project.add_category(name, keypoints=keypoints)
            report.categories += 1
        for file in files:
            image, added = add_image_file(
                project, file.file_name, file.path, lambda text, f=file: InputError(f.path, text), max_pixels, file.size
            )
            report.images += added
            report.warnings.extend(file.warnings)
            for group in file.groups:
                if group.label is None:
                    report.warnings.append(
                        f"{file.path}: points {sorted(group.points)} belong to no "
                        "polygon, rectangle, circle or mask; left out"
                    )
                    continue
                category = categories[group.label]
                keypoints = None
                if group.points:
                    unknown = [name for name in group.points if name not in category.keypoints]
                    if unknown:
                        raise InputError(
                            file.path,
                            f"points {unknown} are not keypoints of category "
                            f"'{category.name}' {list(category.keypoints)}",
                        )
                    keypoints = np.zeros((category.num_keypoints, 3))
                    for name, (x, y) in group.points.items():
                        keypoints[category.keypoints.index(name)] = (x, y, 2)
                geometry: dict[str, Any] = {"polygons": group.polygons}
                if group.mask_parts:
                    geometry = {"rle": masks.encode(_mask_of(group, image.height, image.width))}
                if add(image.id, category.id, **geometry, keypoints=keypoints) is None:
                    report.duplicates += 1
                    continue
                report.instances += 1
            if project.instances(image.id) and image.state == ReviewState.UNLABELED:
                project.set_review_state(image.id, ReviewState.IN_REVIEW)
    return report
