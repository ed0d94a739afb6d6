"""Checking a COCO file before an import writes anything: what the file says, read as pycocotools
reads it, as labelme2coco, Datumaro, mmpose and Roboflow write it. No Qt.

What the project keeps otherwise is normalised with a warning (a 0-based skeleton, ``"iscrowd":
false``, keypoints without names, ``"supercategory": null``); what would corrupt the project or
could not be exported again is refused in one line naming the entry (docs/decisions/0006).
Coordinates may lie up to one image size outside the image (``masks.polygon_bounds``): people
partly outside the frame stay, a coordinate of 1e10 does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotator import masks
from annotator.interchange import check_coordinates, finite_number, is_number, read_json
from annotator.store import MAX_ID, Project
from model.config import skeleton_to_coco
from model.errors import InputError

# Larger than any image file can be (PNG's limit); a size over it is not one to check the file against.
MAX_IMAGE_SIDE = 2**31 - 1
# labelme2coco writes its background class as category 0; with no annotations it is no category.
LABELME_BACKGROUND = "_background_"


@dataclass
class FileCategory:
    """One checked COCO category; ``skeleton`` is normalised once its keypoints are known."""

    id: int
    name: str
    supercategory: str
    color: str | None
    keypoints: list[str]
    skeleton: Any
    where: str


@dataclass
class FileImage:
    id: int
    file_name: str
    width: int
    height: int
    where: str


@dataclass
class FileAnnotation:
    """One checked COCO annotation, ready for the store."""

    id: int
    where: str
    image_index: int
    category_name: str
    rle: masks.RLE | None
    polygons: list[list[float]] | None
    bbox: list[float] | None
    area: float | None
    keypoints: list[float] | None
    iscrowd: bool
    score: float | None


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Checker:
    """Reads one COCO dict, raising InputError that names the file and the offending entry, and
    gathering warnings (one line for each kind, naming the first entry it was found in)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.notes: dict[str, list[str]] = {}

    def error(self, where: str, problem: str) -> InputError:
        return InputError(self.path, f"{where}: {problem}" if where else problem)

    def warn(self, where: str, what: str) -> None:
        self.notes.setdefault(what, []).append(where)

    def warnings(self) -> list[str]:
        lines = []
        for what, places in self.notes.items():
            more = f" and {len(places) - 1} more" if len(places) > 1 else ""
            lines.append(f"{self.path}: {places[0]}{more}: {what}" if places[0] else f"{self.path}: {what}")
        return lines

    def ids_changed(self, what: str, pairs: list[tuple[int, int]]) -> None:
        changed = [(old, new) for old, new in pairs if old != new]
        if changed:
            shown = ", ".join(f"{old} -> {new}" for old, new in changed[:3]) + (", ..." if len(changed) > 3 else "")
            self.warn(
                "",
                f"{len(changed)} {what} id(s) differ in the project: {shown} (an id below 1 or in use "
                "gets a new one; an export writes the new ids)",
            )

    def items(self, data: dict, key: str, required: bool) -> list:
        if key not in data:
            if required:
                raise self.error("", f"no '{key}' list; is this a COCO instances or keypoints file?")
            return []
        if not isinstance(data[key], list):
            raise self.error("", f"'{key}' must be a list")
        return data[key]

    def field(self, entry: Any, where: str, key: str, kind: type, required: bool = True) -> Any:
        if not isinstance(entry, dict):
            raise self.error(where, "must be an object")
        if key not in entry:
            if required:
                raise self.error(where, f"missing '{key}'")
            return None
        value = entry[key]
        if not (_is_id(value) if kind is int else isinstance(value, kind)):
            names = {int: "an integer", str: "a string", list: "a list", dict: "an object"}
            raise self.error(where, f"'{key}' must be {names[kind]}, got {type(value).__name__}")
        return value

    def text(self, entry: dict, where: str, key: str) -> str | None:
        """An optional string field that no reader depends on; null reads as missing
        (labelme2coco writes ``"supercategory": null``), anything else but text too, warned."""
        value = entry.get(key)
        if value is not None and not isinstance(value, str):
            self.warn(where, f"'{key}' is not text ({type(value).__name__}); left out")
            return None
        return value

    def id(self, entry: Any, where: str, seen: set[int], what: str) -> int:
        value = self.field(entry, where, "id", int)
        if value > MAX_ID:
            raise self.error(
                where, f"{what} id {value} is over {MAX_ID}, the largest id a project can hold and go on from"
            )
        if value in seen:
            raise self.error(where, f"duplicate {what} id {value}")
        seen.add(value)
        return value


def _check_categories(check: Checker, data: dict) -> list[FileCategory]:
    categories, seen, names = [], set(), set()
    for index, entry in enumerate(check.items(data, "categories", required=bool(data.get("annotations")))):
        where = f"categories[{index}]"
        category_id = check.id(entry, where, seen, "category")
        name = check.field(entry, where, "name", str)
        if not name.strip():
            raise check.error(where, "category name is empty")
        if name in names:
            raise check.error(where, f"duplicate category name {name!r}")
        names.add(name)
        keypoints = entry.get("keypoints") or []
        if (
            not isinstance(keypoints, list)
            or not all(isinstance(k, str) and k for k in keypoints)
            or len(set(keypoints)) != len(keypoints)
        ):
            raise check.error(where, "'keypoints' must be a list of distinct names")
        categories.append(
            FileCategory(
                category_id,
                name,
                check.text(entry, where, "supercategory") or "",
                check.text(entry, where, "color"),
                keypoints,
                entry.get("skeleton"),
                where,
            )
        )
    return categories


def _name_keypoints(check: Checker, categories: list[FileCategory], annotations: list, project: Project) -> None:
    """Keypoint names for the categories that name none while their annotations hold keypoints
    (as Datumaro and Roboflow may write them): the project's names for a category of that name and
    number, else "1".."K". A nameless category the project knows with keypoints takes its names."""
    by_id = {category.id: category for category in categories if not category.keypoints}
    first: dict[int, tuple[int, str]] = {}
    for index, entry in enumerate(annotations):
        if not isinstance(entry, dict) or not _is_id(entry.get("category_id")):
            continue  # _check_annotation says what is wrong with it
        category, values = by_id.get(entry["category_id"]), entry.get("keypoints")
        if category is None or not isinstance(values, list) or not values:
            continue
        length, where = first.setdefault(category.id, (len(values), f"annotations[{index}]"))
        if len(values) % 3 or len(values) != length:
            raise check.error(
                f"annotations[{index}]",
                f"'keypoints' holds {len(values)} numbers, {where} {length}: "
                f"category {category.name!r} names no keypoints, so all "
                "must hold the same number of [x, y, v] triples",
            )
    for category in by_id.values():
        known = project.category_by_name(category.name)
        count = first[category.id][0] // 3 if category.id in first else None
        if known is not None and known.keypoints and count in (None, known.num_keypoints):
            category.keypoints = list(known.keypoints)
        elif count:
            category.keypoints = [str(k + 1) for k in range(count)]
            check.warn(
                category.where,
                f"category {category.name!r} names no keypoints, but its annotations "
                f"hold {count}; they are named 1..{count}",
            )


def _skeleton(check: Checker, category: FileCategory) -> list[tuple[int, int]]:
    """The skeleton as 1-based pairs of keypoint numbers. A 0-based one is shifted; edges that are
    not pairs of keypoint numbers are left out (pycocotools reads no skeleton)."""
    raw = category.skeleton
    if raw is None or raw == []:
        return []
    edges = raw if isinstance(raw, list) else [raw]
    pairs = [
        (edge[0], edge[1])
        for edge in edges
        if isinstance(edge, list) and len(edge) == 2 and all(_is_id(i) for i in edge)
    ]
    count = len(category.keypoints)
    if pairs and min(min(pair) for pair in pairs) == 0 and max(max(pair) for pair in pairs) < count:
        pairs = list(skeleton_to_coco(pairs))
        check.warn(category.where, "the skeleton counts keypoints from 0; read as COCO's numbers from 1")
    kept = [pair for pair in pairs if all(1 <= i <= count for i in pair)]
    if len(kept) != len(edges):
        check.warn(
            category.where,
            f"{len(edges) - len(kept)} skeleton edges are not pairs of keypoint numbers 1..{count}; left out",
        )
    return kept


def _check_images(check: Checker, data: dict) -> list[FileImage]:
    images, seen = [], set()
    for index, entry in enumerate(check.items(data, "images", required=True)):
        where = f"images[{index}]"
        image_id = check.id(entry, where, seen, "image")
        file_name = check.field(entry, where, "file_name", str)
        width, height = (check.field(entry, where, key, int) for key in ("width", "height"))
        if min(width, height) < 1 or max(width, height) > MAX_IMAGE_SIDE:
            raise check.error(where, f"width and height must be in 1..{MAX_IMAGE_SIDE}, got {width}x{height}")
        images.append(FileImage(image_id, file_name, width, height, f"images[{index}] (id {image_id})"))
    return images


def _check_segmentation(
    check: Checker,
    where: str,
    segmentation: Any,
    image: FileImage,
) -> tuple[masks.RLE | None, list[list[float]] | None]:
    height, width = image.height, image.width
    if isinstance(segmentation, list):
        polygons = []
        for part, polygon in enumerate(segmentation):
            what = f"segmentation polygon {part}"
            values = check_coordinates(polygon, what, lambda p: check.error(where, p), negative=True)
            if len(values) < 6 or len(values) % 2:
                raise check.error(
                    where, f"{what} has {len(values)} numbers; a polygon needs an even count of at least 6 (3 points)"
                )
            polygons.append(values)
        if masks.bounded_polygons(polygons, height, width) != polygons:
            check.warn(where, "segmentation reaches more than one image size outside the image; clipped there")
        return None, polygons or None
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_id(v) for v in size)):
            raise check.error(where, "RLE 'size' must be [height, width]")
        if size != [height, width]:
            raise check.error(where, f"RLE size {size} differs from the image's [height, width] [{height}, {width}]")
        if isinstance(counts, str):
            try:
                return masks.validated({"size": size, "counts": counts}), None
            except ValueError as error:
                raise check.error(where, f"RLE 'counts' is not a valid compressed RLE string: {error}") from None
        if isinstance(counts, list) and all(_is_id(c) and c >= 0 for c in counts):
            if sum(counts) != height * width:
                raise check.error(
                    where, f"uncompressed RLE counts sum to {sum(counts)}, not height*width = {height * width}"
                )
            return masks.from_uncompressed({"size": size, "counts": counts}), None
        raise check.error(
            where, "RLE 'counts' must be a string (compressed) or a list of non-negative integers (uncompressed)"
        )
    raise check.error(where, "'segmentation' must be a list of polygons or an RLE object")


def _check_box(check: Checker, where: str, value: Any, image: FileImage) -> list[float]:
    bbox = check_coordinates(value, "'bbox'", lambda p: check.error(where, p), negative=True)
    if len(bbox) != 4:
        raise check.error(where, f"'bbox' must be [x, y, width, height], got {len(bbox)} numbers")
    x0, y0, x1, y1 = masks.polygon_bounds(image.height, image.width)
    if bbox[2] < 0 or bbox[3] < 0:
        raise check.error(where, f"'bbox' {bbox} has a negative width or height")
    if bbox[0] < x0 or bbox[1] < y0 or bbox[0] + bbox[2] > x1 or bbox[1] + bbox[3] > y1:
        raise check.error(
            where, f"'bbox' {bbox} reaches more than one image size outside the {image.width}x{image.height} image"
        )
    return bbox


def _check_keypoints(
    check: Checker,
    where: str,
    values: Any,
    category: FileCategory,
    image: FileImage,
) -> list[float] | None:
    if values is None or values == []:
        return None
    count = len(category.keypoints)
    if not count:
        raise check.error(where, f"has keypoints, but category {category.name!r} has no keypoint names")
    if not isinstance(values, list) or len(values) != 3 * count:
        length = len(values) if isinstance(values, list) else type(values).__name__
        raise check.error(
            where,
            f"'keypoints' must hold 3 x {count} = {3 * count} numbers "
            f"[x, y, v] for category {category.name!r}, got {length}",
        )
    keypoints = check_coordinates(values, "'keypoints'", lambda p: check.error(where, p), negative=True)
    x0, y0, x1, y1 = masks.polygon_bounds(image.height, image.width)
    for k in range(count):
        x, y, v = keypoints[3 * k : 3 * k + 3]
        if v not in (0, 1, 2):
            raise check.error(where, f"keypoint {k + 1} has visibility {v:g}; it must be 0, 1 or 2")
        if not (x0 <= x <= x1 and y0 <= y <= y1):
            raise check.error(
                where,
                f"keypoint {k + 1} at ({x:g}, {y:g}) lies more than one image size "
                f"outside the {image.width}x{image.height} image",
            )
    return keypoints


def _check_annotation(
    check: Checker,
    index: int,
    entry: Any,
    seen: set[int],
    images: dict[int, tuple[int, FileImage]],
    categories: dict[int, FileCategory],
) -> FileAnnotation:
    where = f"annotations[{index}]"
    annotation_id = check.id(entry, where, seen, "annotation")
    where = f"annotations[{index}] (id {annotation_id})"
    image_id = check.field(entry, where, "image_id", int)
    if image_id not in images:
        raise check.error(where, f"image_id {image_id} is not among the file's images")
    category_id = check.field(entry, where, "category_id", int)
    if category_id not in categories:
        raise check.error(where, f"category_id {category_id} is not among the file's categories")
    category = categories[category_id]
    image_index, image = images[image_id]
    iscrowd = entry.get("iscrowd")
    if isinstance(iscrowd, bool):
        check.warn(where, "'iscrowd' is true or false; read as 1 or 0")
    elif not (iscrowd is None or (is_number(iscrowd) and iscrowd in (0, 1))):
        raise check.error(where, f"'iscrowd' must be 0 or 1, got {iscrowd!r}")
    rle, polygons = None, None
    if entry.get("segmentation") is not None:
        rle, polygons = _check_segmentation(check, where, entry["segmentation"], image)
    bbox = None if entry.get("bbox") in (None, []) else _check_box(check, where, entry["bbox"], image)
    if rle is None and polygons is None and bbox is None:
        raise check.error(where, "has neither a segmentation nor a bbox")
    keypoints = _check_keypoints(check, where, entry.get("keypoints"), category, image)
    area = None if entry.get("area") is None else finite_number(entry["area"])
    if entry.get("area") is not None and (area is None or area < 0):
        check.warn(where, "'area' is not a finite number >= 0; the mask's (or box's) is used")
        area = None
    score = entry.get("score")
    if score is not None and (score := finite_number(score)) is None:
        raise check.error(where, "'score' must be a finite number")
    return FileAnnotation(
        annotation_id, where, image_index, category.name, rle, polygons, bbox, area, keypoints, bool(iscrowd), score
    )


def _leave_out_placeholders(check: Checker, categories: list[FileCategory], used: set[str]) -> None:
    """Takes out the categories no annotation uses that other tools write as placeholders, not
    classes: labelme2coco's ``_background_``, and the supercategory entry Roboflow writes (its
    dataset's name as category 0, the supercategory of all others). Kept, they would become
    classes with no examples."""
    supercategories = {category.supercategory for category in categories if category.supercategory != category.name}
    for category in [c for c in categories if c.name not in used]:
        if category.name == LABELME_BACKGROUND:
            check.warn(
                category.where,
                f"{category.name!r} is labelme2coco's background class and has no "
                "annotations: not a category; left out",
            )
            categories.remove(category)
        elif category.name in supercategories:
            check.warn(
                category.where,
                f"{category.name!r} has no annotations and is the supercategory of others "
                "(as Roboflow writes it): not a category; left out",
            )
            categories.remove(category)


@dataclass
class CocoFile:
    """A COCO file, checked: its entries, and the checker that names them in errors and warnings."""

    check: Checker
    categories: list[FileCategory]
    images: list[FileImage]
    annotations: list[FileAnnotation]


def read_coco_file(path: Path, project: Project, data: Any = None) -> CocoFile:
    """The categories, images and annotations of the COCO file ``path`` (its JSON ``data`` when
    read already), checked against each other and against ``project`` (categories are matched by
    name); nothing is written.

    Raises:
        InputError: in one line, naming the file and the entry, for what cannot be imported.
    """
    check = Checker(path)
    data = read_json(path) if data is None else data
    if not isinstance(data, dict):
        raise check.error("", "a COCO file must hold a JSON object with 'images', 'annotations' and 'categories'")
    categories = _check_categories(check, data)
    images = _check_images(check, data)
    entries = check.items(data, "annotations", required=False)
    _name_keypoints(check, categories, entries, project)
    for category in categories:
        category.skeleton = _skeleton(check, category)
    images_by_id = {image.id: (index, image) for index, image in enumerate(images)}
    categories_by_id = {category.id: category for category in categories}
    seen: set[int] = set()
    annotations = [
        _check_annotation(check, index, entry, seen, images_by_id, categories_by_id)
        for index, entry in enumerate(entries)
    ]
    _leave_out_placeholders(check, categories, {annotation.category_name for annotation in annotations})
    for category in categories:
        old = project.category_by_name(category.name)  # one only the model proposed gives way to the file's
        if old is not None and not old.proposed and list(old.keypoints) != category.keypoints:
            raise check.error(
                category.where,
                f"category {category.name!r} has keypoints {category.keypoints} "
                f"here but {list(old.keypoints)} in the project",
            )
    return CocoFile(check, categories, images, annotations)
