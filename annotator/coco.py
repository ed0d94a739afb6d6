"""COCO instances and person_keypoints files: import into a project, export from one. No Qt.

Import checks the whole file before writing anything and then writes it in one transaction, so a
bad file leaves the project exactly as it was. Export streams the store (bounded memory) into a
temporary file that replaces the target only when complete. It writes the labels people kept;
model proposals nobody accepted stay out unless asked for by score (docs/decisions/0008).

Ids: an imported image, category or annotation keeps its COCO id when the project does not use that
id yet, so importing into a new project and exporting again gives the same ids (and results can be
evaluated against the source with pycocotools). Categories are matched by name.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from annotator import masks
from model.errors import InputError
from annotator.interchange import (AtomicWriter, ImportReport, add_image_file, check_coordinates,
                                   is_number, iter_json_array, read_json)
from annotator.store import Category, Instance, Project, ReviewState, Source
from model.images import DEFAULT_MAX_PIXELS


@dataclass
class _Annotation:
    """One checked COCO annotation, ready for the store."""

    id: int
    image_index: int
    category_name: str
    rle: masks.RLE | None
    polygons: list[list[float]] | None
    bbox: list[float] | None
    keypoints: list[float] | None
    iscrowd: bool
    score: float | None


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Checker:
    """Reads one COCO dict, raising InputError that names the file and the offending entry."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, where: str, problem: str) -> InputError:
        return InputError(self.path, f"{where}: {problem}" if where else problem)

    def items(self, data: dict, key: str, required: bool) -> list:
        if key not in data:
            if required:
                raise self.error("", f"no '{key}' list; is this a COCO instances or keypoints file?")
            return []
        if not isinstance(data[key], list):
            raise self.error("", f"'{key}' must be a list")
        return data[key]

    def field(self, entry: Any, where: str, key: str, kind: type | tuple, required: bool = True) -> Any:
        if not isinstance(entry, dict):
            raise self.error(where, "must be an object")
        if key not in entry:
            if required:
                raise self.error(where, f"missing '{key}'")
            return None
        value = entry[key]
        ok = _is_id(value) if kind is int else (
            is_number(value) if kind is float else isinstance(value, kind))
        if not ok:
            names = {int: "an integer", float: "a number", str: "a string", list: "a list",
                     dict: "an object"}
            raise self.error(where, f"'{key}' must be {names.get(kind, 'a list or an object')}, "
                                    f"got {type(value).__name__}")
        return value

    def unique_id(self, entry: Any, where: str, seen: set[int], what: str) -> int:
        value = self.field(entry, where, "id", int)
        if value < 1:
            raise self.error(where, f"{what} id must be at least 1, got {value}")
        if value in seen:
            raise self.error(where, f"duplicate {what} id {value}")
        seen.add(value)
        return value


def _check_categories(check: _Checker, data: dict) -> tuple[list[dict], dict[int, dict]]:
    categories, by_id, names = [], {}, set()
    for index, entry in enumerate(check.items(data, "categories", required=bool(data.get("annotations")))):
        where = f"categories[{index}]"
        category_id = check.unique_id(entry, where, set(by_id), "category")
        name = check.field(entry, where, "name", str)
        if not name.strip():
            raise check.error(where, "category name is empty")
        if name in names:
            raise check.error(where, f"duplicate category name '{name}'")
        names.add(name)
        keypoints = check.field(entry, where, "keypoints", list, required=False) or []
        if not all(isinstance(k, str) and k for k in keypoints) or len(set(keypoints)) != len(keypoints):
            raise check.error(where, "'keypoints' must be a list of distinct names")
        skeleton = check.field(entry, where, "skeleton", list, required=False) or []
        for edge in skeleton:
            if not (isinstance(edge, list) and len(edge) == 2 and all(_is_id(i) for i in edge)
                    and all(1 <= i <= len(keypoints) for i in edge)):
                raise check.error(where, f"skeleton edge {edge} must be two keypoint numbers in "
                                         f"1..{len(keypoints)} (COCO skeletons are 1-based)")
        category = {
            "id": category_id, "name": name,
            "supercategory": check.field(entry, where, "supercategory", str, required=False) or "",
            "color": check.field(entry, where, "color", str, required=False),
            "keypoints": keypoints, "skeleton": [tuple(edge) for edge in skeleton],
        }
        categories.append(category)
        by_id[category_id] = category
    return categories, by_id


def _check_segmentation(check: _Checker, where: str, segmentation: Any, height: int, width: int,
                        ) -> tuple[masks.RLE | None, list[list[float]] | None]:
    if isinstance(segmentation, list):
        if not segmentation:
            return None, None
        polygons = []
        for part, polygon in enumerate(segmentation):
            what = f"segmentation polygon {part}"
            values = check_coordinates(polygon, what, lambda p: check.error(where, p))
            if len(values) < 6 or len(values) % 2:
                raise check.error(where, f"{what} has {len(values)} numbers; a polygon needs an even "
                                         "count of at least 6 (3 points)")
            polygons.append(values)
        return None, polygons
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_id(v) for v in size)):
            raise check.error(where, "RLE 'size' must be [height, width]")
        if size != [height, width]:
            raise check.error(where, f"RLE size {size} differs from the image's [height, width] "
                                     f"[{height}, {width}]")
        if isinstance(counts, str):
            rle = {"size": size, "counts": counts}
            try:
                masks.check(rle)
            except ValueError as error:
                raise check.error(where, f"RLE 'counts' is not a valid compressed RLE string: {error}") from None
            return rle, None
        if isinstance(counts, list) and all(_is_id(c) and c >= 0 for c in counts):
            if sum(counts) != height * width:
                raise check.error(where, f"uncompressed RLE counts sum to {sum(counts)}, "
                                         f"not height*width = {height * width}")
            return masks.from_uncompressed({"size": size, "counts": counts}), None
        raise check.error(where, "RLE 'counts' must be a string (compressed) or a list of "
                                 "non-negative integers (uncompressed)")
    raise check.error(where, "'segmentation' must be a list of polygons or an RLE object")


def _check_annotation(check: _Checker, index: int, entry: Any, seen: set[int], images: dict[int, tuple],
                      categories: dict[int, dict]) -> _Annotation:
    where = f"annotations[{index}]"
    annotation_id = check.unique_id(entry, where, seen, "annotation")
    where = f"annotations[{index}] (id {annotation_id})"
    image_id = check.field(entry, where, "image_id", int)
    if image_id not in images:
        raise check.error(where, f"image_id {image_id} is not among the file's images")
    category_id = check.field(entry, where, "category_id", int)
    if category_id not in categories:
        raise check.error(where, f"category_id {category_id} is not among the file's categories")
    category = categories[category_id]
    image_index, width, height = images[image_id]
    iscrowd = check.field(entry, where, "iscrowd", int, required=False) or 0
    if iscrowd not in (0, 1):
        raise check.error(where, f"'iscrowd' must be 0 or 1, got {iscrowd}")
    rle, polygons = None, None
    if entry.get("segmentation") is not None:
        rle, polygons = _check_segmentation(check, where, entry["segmentation"], height, width)
    bbox = None
    if entry.get("bbox") is not None:
        bbox = check_coordinates(entry["bbox"], "'bbox'", lambda p: check.error(where, p))
        if len(bbox) != 4:
            raise check.error(where, f"'bbox' must be [x, y, width, height], got {len(bbox)} numbers")
    if rle is None and polygons is None and bbox is None:
        raise check.error(where, "has neither a segmentation nor a bbox")
    keypoints = None
    if entry.get("keypoints") is not None:
        values = entry["keypoints"]
        count = len(category["keypoints"])
        if not count:
            raise check.error(where, f"has keypoints, but category '{category['name']}' has no "
                                     "keypoint names")
        if not isinstance(values, list) or len(values) != 3 * count:
            length = len(values) if isinstance(values, list) else type(values).__name__
            raise check.error(where, f"'keypoints' must hold 3 x {count} = {3 * count} numbers "
                                     f"[x, y, v] for category '{category['name']}', got {length}")
        keypoints = check_coordinates(values, "'keypoints'", lambda p: check.error(where, p))
        for k, v in enumerate(keypoints[2::3]):
            if v not in (0, 1, 2):
                raise check.error(where, f"keypoint {k + 1} has visibility {v:g}; it must be 0, 1 or 2")
    score = entry.get("score")
    if score is not None and not (is_number(score) and math.isfinite(score)):
        raise check.error(where, "'score' must be a finite number")
    return _Annotation(annotation_id, image_index, category["name"], rle, polygons, bbox, keypoints,
                       bool(iscrowd), score)


def import_coco(project: Project, path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImportReport:
    """Adds the images, categories and annotations of a COCO file; all or nothing.

    Image ``file_name`` entries are resolved against the project's image root.
    """
    path = Path(path)
    check = _Checker(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise check.error("", "a COCO file must hold a JSON object with 'images', 'annotations' "
                              "and 'categories'")
    categories, categories_by_id = _check_categories(check, data)

    images: list[dict] = []
    images_by_id: dict[int, tuple[int, int, int]] = {}
    for index, entry in enumerate(check.items(data, "images", required=True)):
        where = f"images[{index}]"
        image_id = check.unique_id(entry, where, set(images_by_id), "image")
        file_name = check.field(entry, where, "file_name", str)
        size = [check.field(entry, where, key, int) for key in ("width", "height")]
        if min(size) < 1:
            raise check.error(where, f"width and height must be positive, got {size[0]}x{size[1]}")
        images.append({"id": image_id, "file_name": file_name, "width": size[0], "height": size[1],
                       "where": f"images[{index}] (id {image_id})"})
        images_by_id[image_id] = (index, size[0], size[1])

    seen: set[int] = set()
    annotations = [_check_annotation(check, index, entry, seen, images_by_id, categories_by_id)
                   for index, entry in enumerate(check.items(data, "annotations", required=False))]

    existing = {c.name: c for c in project.categories()}
    for category in categories:
        old = existing.get(category["name"])
        if old is not None and list(old.keypoints) != category["keypoints"]:
            raise check.error("", f"category '{category['name']}' has keypoints {category['keypoints']} "
                                  f"here but {list(old.keypoints)} in the project")

    report = ImportReport()
    with project.transaction():
        used_category_ids = {c.id for c in existing.values()}
        by_name: dict[str, Category] = dict(existing)
        for category in categories:
            if category["name"] in by_name:
                continue
            keep_id = category["id"] not in used_category_ids
            added = project.add_category(category["name"], category["supercategory"], category["color"],
                                         category["keypoints"], category["skeleton"],
                                         id=category["id"] if keep_id else None)
            used_category_ids.add(added.id)
            by_name[added.name] = added
            report.categories += 1

        records = []
        for image in images:
            keep_id = not project.id_in_use("images", image["id"])
            record, added = add_image_file(
                project, image["file_name"], path,
                lambda p, where=image["where"]: check.error(where, p),
                max_pixels, (image["width"], image["height"]), image["id"] if keep_id else None)
            records.append(record)
            report.images += added

        for annotation in annotations:
            record = records[annotation.image_index]
            keep_id = not project.id_in_use("instances", annotation.id)
            project.add_instance(
                record.id, by_name[annotation.category_name].id,
                rle=annotation.rle,
                polygons=annotation.polygons, bbox=annotation.bbox, keypoints=annotation.keypoints,
                iscrowd=annotation.iscrowd, score=annotation.score,
                id=annotation.id if keep_id else None,
            )
            report.instances += 1
        for record in records:
            if record.state == ReviewState.UNLABELED and project.instances(record.id):
                project.set_review_state(record.id, ReviewState.IN_REVIEW)
    return report


def _coco_category(category: Category) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": category.id, "name": category.name,
                             "supercategory": category.supercategory, "color": category.color}
    if category.keypoints:
        entry["keypoints"] = list(category.keypoints)
        entry["skeleton"] = [list(edge) for edge in category.skeleton]
    return entry


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def annotation_json(instance: Instance, category: Category, rle: bool) -> str:
    """The COCO annotation of one instance, as JSON text: segmentation, box, area and keypoints
    together. Built by hand so that a stored outline goes out as the text it is stored as."""
    parts = [f'{{"id":{instance.id},"image_id":{instance.image_id},'
             f'"category_id":{instance.category_id},"iscrowd":{int(instance.iscrowd)}']
    if instance.rle is not None:
        if rle or instance.iscrowd:
            segmentation = _dumps(instance.rle)
        elif instance.polygons_json is not None:
            segmentation = instance.polygons_json
        else:
            segmentation = masks.polygons_json(instance.rle)
            if segmentation == "[]":  # an empty mask has no outline; its RLE is still valid
                segmentation = _dumps(instance.rle)
        parts.append(f',"segmentation":{segmentation}')
    parts.append(f',"area":{_dumps(instance.area)},"bbox":{_dumps(list(instance.bbox))}')
    if category.keypoints and instance.keypoints is not None:
        parts.append(f',"keypoints":{_dumps(list(instance.keypoints))},'
                     f'"num_keypoints":{instance.num_keypoints}')
    if instance.source == Source.MODEL and instance.score is not None:
        parts.append(f',"score":{_dumps(instance.score)}')  # a proposal nobody reviewed says so
    parts.append("}")
    return "".join(parts)


# Images per piece of an export; a piece is a few MB of JSON, and at most two per worker are held.
IMAGES_PER_PIECE = 1000
# Below this many instances an export runs in this process: starting workers would cost more.
PARALLEL_EXPORT_FROM = 50_000


def _annotations_text(project: Project, image_ids: tuple[int, int], states: list[ReviewState] | None,
                      rle: bool, min_proposal_score: float) -> tuple[str, int]:
    categories = {c.id: c for c in project.categories()}
    pieces = [annotation_json(instance, categories[instance.category_id], rle)
              for instance in project.iter_instances(states, image_ids, min_proposal_score)]
    return ",\n".join(pieces), len(pieces)


def _annotations_text_in_worker(path: str, image_ids: tuple[int, int], states: list[ReviewState] | None,
                                rle: bool, min_proposal_score: float) -> tuple[str, int]:
    with Project.open(path) as project:
        return _annotations_text(project, image_ids, states, rle, min_proposal_score)


def _image_id_ranges(project: Project, states: list[ReviewState] | None) -> list[tuple[int, int]]:
    ids = [image.id for image in project.iter_images(states=states)]
    return [(ids[i], ids[min(i + IMAGES_PER_PIECE, len(ids)) - 1]) for i in range(0, len(ids), IMAGES_PER_PIECE)]


def _annotation_pieces(project: Project, states: list[ReviewState] | None, rle: bool,
                       min_proposal_score: float, workers: int) -> Iterator[tuple[str, int]]:
    """The annotations as JSON text, piece by piece in image order; tracing polygons from masks
    is the slow part, so large exports spread the pieces over worker processes."""
    ranges = _image_id_ranges(project, states)
    if workers <= 1 or project.instance_count() < PARALLEL_EXPORT_FROM:
        for image_ids in ranges:
            yield _annotations_text(project, image_ids, states, rle, min_proposal_score)
        return
    # spawn, not fork: the app calls this with Qt threads and an open database in the process
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending: deque[Future] = deque()
        for image_ids in ranges:
            pending.append(pool.submit(_annotations_text_in_worker, str(project.path), image_ids, states, rle,
                                       min_proposal_score))
            if len(pending) >= 2 * workers:  # bounded memory: at most this many pieces held
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def export_coco(project: Project, path: Path | str, only_done: bool = False, rle: bool = False,
                proposals_from: float | None = None, workers: int | None = None) -> dict[str, int]:
    """Writes the project as one COCO file (atomically); returns the counts written, and in
    ``proposals_left_out`` how many model proposals were not.

    The labels people kept are written; model proposals nobody accepted are left out unless
    ``proposals_from`` is a score, and then those scoring at least that go out too, each with
    its ``score``. Masks go out as polygons (``iscrowd=0``; holes are lost) unless ``rle`` asks
    for compressed RLE, which keeps every pixel. Crowd regions are always RLE. An outline drawn
    as polygons goes out exactly as drawn. ``workers`` defaults to the number of CPU cores.
    """
    path = Path(path)
    states = [ReviewState.DONE] if only_done else None
    min_proposal_score = math.inf if proposals_from is None else proposals_from
    categories = project.categories()
    counts = {"images": 0, "annotations": 0, "categories": len(categories)}

    def images() -> Iterator[dict]:
        for image in project.iter_images(states=states):
            counts["images"] += 1
            yield {"id": image.id, "file_name": image.file_name, "width": image.width,
                   "height": image.height}

    info = {"description": f"exported from {project.path.name}",
            "date_created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with AtomicWriter(path) as out:
        out.write('{"info":' + _dumps(info) + ',\n"licenses":[],\n"images":')
        out.writelines(iter_json_array(images()))
        out.write(',\n"annotations":[\n')
        separator = ""
        for text, count in _annotation_pieces(project, states, rle, min_proposal_score, workers or os.cpu_count() or 1):
            if count:
                out.write(separator + text)
                separator = ",\n"
                counts["annotations"] += count
        out.write('],\n"categories":')
        out.writelines(iter_json_array(_coco_category(c) for c in categories))
        out.write("}\n")
    counts["proposals_left_out"] = project.instance_count(states) - counts["annotations"]
    return counts
