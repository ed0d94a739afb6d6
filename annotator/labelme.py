"""Importing a folder of labelme JSON files into a project. No Qt.

labelme stores one JSON file per image, each with a list of shapes (``polygon``, ``rectangle``,
``circle``, ``point``, ``mask``, ``line``, ``linestrip``). Here:

- area shapes (polygon, rectangle, circle, mask) that share a ``group_id`` become one instance, the
  union of their areas; a shape without a ``group_id`` is an instance of its own;
- ``point`` shapes in a group become that instance's keypoints, matched by label to the keypoint
  names of the instance's category. A category that is new to the project takes its keypoint names
  from the point labels seen with it, in order of first appearance (labelme has no schema);
- lines, and points that belong to no area, are left out with a warning: they are not instances.

Polygons, rectangles and circles keep their outline (exported as the same polygon); masks are
pasted at their box, ``points = [[x1, y1], [x2, y2]]`` with both corners inclusive, as labelme does.
The whole folder is checked before anything is written, and then written in one transaction.
"""

from __future__ import annotations

import base64
import io
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from annotator import masks
from model.errors import InputError
from annotator.interchange import ImportReport, add_image_file, check_coordinates, is_number, read_json
from annotator.store import Project, ReviewState, check_file_name
from model.images import DEFAULT_MAX_PIXELS

AREA_SHAPES = ("polygon", "rectangle", "circle", "mask")
CIRCLE_VERTICES = 64


@dataclass
class _Group:
    """The shapes of one instance in one labelme file."""

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


def _shape_area(path: Path, where: str, shape: dict, shape_type: str, points: list[list[float]],
                group: _Group) -> None:
    def problem(text: str) -> InputError:
        return InputError(path, f"{where}: {text}")

    if shape_type == "polygon":
        if len(points) < 3:
            raise problem(f"polygon has {len(points)} points; it needs at least 3")
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
        (cx, cy), (px, py) = points
        radius = math.hypot(px - cx, py - cy)
        angles = np.linspace(0.0, 2.0 * math.pi, CIRCLE_VERTICES, endpoint=False)
        ring = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)
        group.polygons.append([round(max(v, 0.0), 3) for v in ring.reshape(-1).tolist()])
    else:  # mask
        if len(points) != 2 or not isinstance(shape.get("mask"), str):
            raise problem("mask shape needs its box as 2 points and a base64 PNG 'mask'")
        try:
            crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(shape["mask"], validate=True))))
        except Exception:
            raise problem("'mask' is not a base64-encoded PNG image") from None
        if crop.ndim == 3:
            crop = crop[..., 0]
        x1, y1 = (int(min(points[0][i], points[1][i])) for i in (0, 1))
        group.mask_parts.append((crop > 0, x1, y1))


def _read_file(path: Path, image_root: Path) -> _File:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise InputError(path, "not a labelme file: no 'shapes' list")
    image_path = data.get("imagePath")
    if not isinstance(image_path, str) or not image_path:
        raise InputError(path, "missing 'imagePath'")
    size = (data.get("imageWidth"), data.get("imageHeight"))
    if not all(isinstance(v, int) and v > 0 for v in size):
        raise InputError(path, "'imageWidth' and 'imageHeight' must be positive integers")
    # imagePath is relative to the JSON file; the project stores it relative to the image root.
    relative_to_json = image_path.replace("\\", "/")
    if Path(relative_to_json).is_absolute():
        raise InputError(path, f"imagePath {image_path!r} is absolute; it must be relative to the JSON file")
    resolved = (path.parent / relative_to_json).resolve()
    try:
        file_name = check_file_name(resolved.relative_to(image_root).as_posix())
    except ValueError:
        raise InputError(path, f"imagePath {image_path!r} points outside the image folder {image_root}") from None

    groups: dict[Any, _Group] = defaultdict(_Group)
    warnings = []
    for index, shape in enumerate(data["shapes"]):
        where = f"shapes[{index}]"
        if not isinstance(shape, dict):
            raise InputError(path, f"{where}: must be an object")
        label = shape.get("label")
        if not isinstance(label, str) or not label.strip():
            raise InputError(path, f"{where}: 'label' must be a non-empty string")
        shape_type = shape.get("shape_type") or "polygon"
        group_id = shape.get("group_id")
        if group_id is not None and not is_number(group_id):
            raise InputError(path, f"{where}: 'group_id' must be a number or null")
        points = shape.get("points")
        if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
            raise InputError(path, f"{where}: 'points' must be a list of [x, y] pairs")
        check_coordinates(_flat(points), "'points'", lambda text: InputError(path, f"{where}: {text}"))
        if shape_type in ("line", "linestrip"):
            warnings.append(f"{path}: {where}: {shape_type} '{label}' is not an instance; left out")
            continue
        group = groups[("group", group_id) if group_id is not None else ("shape", index)]
        if shape_type in AREA_SHAPES:
            if group.label is not None and group.label != label:
                raise InputError(path, f"{where}: group {group_id} mixes the labels "
                                       f"'{group.label}' and '{label}'")
            group.label = label
            _shape_area(path, where, shape, shape_type, points, group)
        elif shape_type == "point":
            if len(points) != 1:
                raise InputError(path, f"{where}: a point shape has one point, got {len(points)}")
            if label in group.points:
                raise InputError(path, f"{where}: group {group_id} has two points labelled '{label}'")
            group.points[label] = (float(points[0][0]), float(points[0][1]))
        else:
            raise InputError(path, f"{where}: unknown shape_type {shape_type!r}")
    return _File(path, file_name, (size[0], size[1]), list(groups.values()), warnings)


def import_labelme(project: Project, folder: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImportReport:
    """Imports every ``*.json`` labelme file under ``folder`` (recursively); all or nothing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a folder of labelme JSON files")
    paths = sorted(folder.rglob("*.json"))
    if not paths:
        raise InputError(folder, "no labelme .json files in this folder")
    files = [_read_file(path, project.image_root) for path in paths]
    report = ImportReport()

    # Keypoint names for categories new to the project: the point labels seen with them.
    existing = {c.name: c for c in project.categories()}
    new_keypoints: dict[str, list[str]] = {}
    for file in files:
        for group in file.groups:
            if group.label is not None and group.label not in existing:
                names = new_keypoints.setdefault(group.label, [])
                names.extend(name for name in group.points if name not in names)

    with project.transaction():
        categories = dict(existing)
        for name, keypoints in new_keypoints.items():
            categories[name] = project.add_category(name, keypoints=keypoints)
            report.categories += 1
        for file in files:
            image, added = add_image_file(project, file.file_name, file.path,
                                          lambda text, f=file: InputError(f.path, text),
                                          max_pixels, file.size)
            report.images += added
            report.warnings.extend(file.warnings)
            for group in file.groups:
                if group.label is None:
                    report.warnings.append(f"{file.path}: points {sorted(group.points)} belong to no "
                                           "polygon, rectangle, circle or mask; left out")
                    continue
                category = categories[group.label]
                keypoints = None
                if group.points:
                    unknown = [name for name in group.points if name not in category.keypoints]
                    if unknown:
                        raise InputError(file.path, f"points {unknown} are not keypoints of category "
                                                    f"'{category.name}' {list(category.keypoints)}")
                    keypoints = np.zeros((category.num_keypoints, 3))
                    for name, (x, y) in group.points.items():
                        keypoints[category.keypoints.index(name)] = (x, y, 2)
                rle = None
                polygons = group.polygons or None
                if group.mask_parts:
                    mask = np.zeros((image.height, image.width), dtype=bool)
                    for crop, x, y in group.mask_parts:
                        part = crop[: max(image.height - y, 0), : max(image.width - x, 0)]
                        mask[y : y + part.shape[0], x : x + part.shape[1]] |= part
                    parts = [mask] + ([masks.decode(masks.from_polygons(polygons, image.height, image.width))]
                                      if polygons else [])
                    rle, polygons = masks.encode(np.logical_or.reduce(parts)), None
                project.add_instance(image.id, category.id, rle=rle, polygons=polygons, keypoints=keypoints)
                report.instances += 1
            if project.instances(image.id) and image.state == ReviewState.UNLABELED:
                project.set_review_state(image.id, ReviewState.IN_REVIEW)
    return report
