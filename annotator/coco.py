"""COCO instances and person_keypoints files: import into a project, export from one. No Qt.

Import checks the whole file before writing anything and then writes it in one transaction, so a
bad file leaves the project exactly as it was. It reads what pycocotools reads, as labelme2coco,
Datumaro, mmpose and Roboflow write it; what the project keeps otherwise (a 0-based skeleton,
``"iscrowd": false``, keypoints without names) is normalised with a warning, and only what would
corrupt the project is refused (docs/decisions/0006). An annotation with a ``score`` is another
tool's prediction: it comes in as a proposal, reviewed like the model's. Export streams the store
(bounded memory) into a temporary file that replaces the target only when complete. It writes the
labels people kept; proposals nobody accepted stay out unless asked for by score
(docs/decisions/0008).

Ids (docs/decisions/0010): an imported image, category or annotation keeps its COCO id when the
project does not use that id yet, and an image that ``new`` added takes the file's id when that is
free, so importing and exporting again gives the same ids (and results can be evaluated against
the source with pycocotools). Ids below 1 (labelme2coco counts from 0) get new ones, with a
warning. Categories are matched by name.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from annotator import masks
from annotator.coco_check import Checker, FileAnnotation, FileCategory, FileImage, read_coco_file
from annotator.damage import check_instance
from annotator.interchange import (
    AtomicWriter,
    Duplicates,
    ImportReport,
    add_image_file,
    iter_json_array,
    read_json,
)
from annotator.project_file import DamagedRow
from annotator.store import Category, ImageRecord, Instance, Project, ReviewState, Source, check_file_name
from model.errors import InputError
from model.images import DEFAULT_MAX_PIXELS


def _add_categories(
    project: Project, check: Checker, categories: list[FileCategory], report: ImportReport
) -> dict[str, Category]:
    """The project's category for each name, adding those it lacks. File ids that are free are
    kept, and given out first, so that a new id never takes one a later category keeps. A category
    the model only proposed is one the project lacks: the file's takes its place, with its proposals
    (``Project.add_category``)."""
    by_name = {category.name: category for category in project.kept_categories()}
    new = [category for category in categories if category.name not in by_name]
    keep = {c.id for c in new if c.id >= 1 and not project.id_in_use("categories", c.id)}
    for category in sorted(new, key=lambda c: c.id not in keep):
        added = project.add_category(
            category.name,
            category.supercategory,
            category.color,
            category.keypoints,
            category.skeleton,
            id=category.id if category.id in keep else None,
        )
        by_name[added.name] = added
        report.categories += 1
    check.ids_changed("category", [(category.id, by_name[category.name].id) for category in categories])
    return by_name


def _take_file_ids(project: Project, wanted: dict[int, int]) -> None:
    """Moves images to the ids the file gives them (``wanted``: project id -> file id) where the
    id is free, or is freed by moving its image first; images wanting each other's ids stay."""
    done: set[int] = set()
    for start in wanted:
        chain: list[int] = []
        current = start
        while current in wanted and current not in done and current not in chain:
            chain.append(current)
            current = wanted[current]
        done.update(chain)
        if current in chain or project.id_in_use("images", current):
            continue
        for image_id in reversed(chain):
            project.change_image_id(image_id, wanted[image_id])


def _add_images(
    project: Project, check: Checker, images: list[FileImage], max_pixels: int, report: ImportReport
) -> list[ImageRecord]:
    """The project's record for each of the file's images, adding those it lacks. An image that
    ``new`` added and nobody labelled yet takes the file's id; new images keep theirs when free."""
    present: dict[int, ImageRecord] = {}
    for index, image in enumerate(images):
        try:
            image.file_name = check_file_name(image.file_name)
        except ValueError as error:
            raise check.error(image.where, str(error)) from None
        record = project.image_by_file_name(image.file_name)
        if record is not None:
            present[index] = record
    _take_file_ids(
        project,
        {
            record.id: images[index].id
            for index, record in present.items()
            if record.id != images[index].id
            and images[index].id >= 1
            and record.state == ReviewState.UNLABELED
            and not project.instances(record.id)
        },
    )
    keep = {
        image.id
        for index, image in enumerate(images)
        if index not in present and image.id >= 1 and not project.id_in_use("images", image.id)
    }
    records: dict[int, ImageRecord] = {}
    for index in sorted(range(len(images)), key=lambda i: images[i].id not in keep):
        image = images[index]
        records[index], added = add_image_file(
            project,
            image.file_name,
            check.path,
            lambda p, where=image.where: check.error(where, p),
            max_pixels,
            (image.width, image.height),
            image.id if image.id in keep else None,
        )
        report.images += added
    check.ids_changed("image", [(image.id, records[index].id) for index, image in enumerate(images)])
    return [records[index] for index in range(len(images))]


def _add_annotations(
    project: Project,
    check: Checker,
    annotations: list[FileAnnotation],
    records: list[ImageRecord],
    categories: dict[str, Category],
    duplicates: Duplicates,
    report: ImportReport,
) -> None:
    keep = {a.id for a in annotations if a.id >= 1 and not project.id_in_use("instances", a.id)}
    add = project.add_instance_if_new if duplicates == "skip" else project.add_instance
    changed = []
    for annotation in sorted(annotations, key=lambda a: a.id not in keep):
        proposal = annotation.score is not None
        try:
            instance = add(
                records[annotation.image_index].id,
                categories[annotation.category_name].id,
                rle=annotation.rle,
                polygons=annotation.polygons,
                bbox=annotation.bbox,
                area=annotation.area,
                keypoints=annotation.keypoints,
                iscrowd=annotation.iscrowd,
                score=annotation.score,
                source=Source.MODEL if proposal else Source.HUMAN,
                model_version=check.path.name if proposal else None,
                id=annotation.id if annotation.id in keep else None,
            )
        except InputError:
            raise
        except ValueError as error:  # the store's own checks, in case ours missed one
            raise check.error(annotation.where, str(error)) from None
        if instance is None:
            report.duplicates += 1
            check.warn(annotation.where, "the image holds this instance already (same category and mask); skipped")
            continue
        report.instances += 1
        changed.append((annotation.id, instance.id))
        if proposal:
            check.warn(
                annotation.where,
                f"has a score: a proposal from {check.path.name!r}, to review like the "
                "model's (export leaves it out unless proposals are asked for)",
            )
        if annotation.bbox is not None and instance.rle is not None and list(instance.bbox) != annotation.bbox:
            check.warn(
                annotation.where,
                "its segmentation covers no pixel of the image; box and area are 0"
                if instance.area == 0
                else "its 'bbox' does not hold its mask; the mask's box and area are kept",
            )
    check.ids_changed("annotation", changed)


def _mark_labelled(project: Project, records: list[ImageRecord]) -> None:
    """Unlabeled images that got labels are in review; those that got only proposals, proposed."""
    for image_id in dict.fromkeys(record.id for record in records):
        if project.image(image_id).state == ReviewState.UNLABELED:
            sources = {instance.source for instance in project.instances(image_id)}
            if sources:
                project.set_review_state(
                    image_id, ReviewState.IN_REVIEW if Source.HUMAN in sources else ReviewState.PROPOSED
                )


def import_coco(
    project: Project, path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS, duplicates: Duplicates = "skip"
) -> ImportReport:
    """Adds the images, categories and annotations of a COCO file; all or nothing.

    Image ``file_name`` entries are resolved against the project's image root. With
    ``duplicates="skip"`` an annotation the image holds already (same category and mask, or box
    without a mask) is left out and counted in the report; ``"keep"`` adds it again.
    """
    data = read_json(Path(path))  # the slow part of a large file: before the write lock is taken
    report = ImportReport()
    with project.transaction():  # the project the file is checked against is the one it goes into
        file = read_coco_file(Path(path), project, data)
        by_name = _add_categories(project, file.check, file.categories, report)
        records = _add_images(project, file.check, file.images, max_pixels, report)
        _add_annotations(project, file.check, file.annotations, records, by_name, duplicates, report)
        _mark_labelled(project, records)
    report.warnings = file.check.warnings() + report.warnings
    return report


def _coco_category(category: Category) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": category.id,
        "name": category.name,
        "supercategory": category.supercategory,
        "color": category.color,
    }
    if category.keypoints:
        entry["keypoints"] = list(category.keypoints)
        entry["skeleton"] = [list(edge) for edge in category.skeleton]
    return entry


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def annotation_json(instance: Instance, category: Category, rle: bool) -> str:
    """The COCO annotation of one instance, as JSON text: segmentation, box, area and keypoints
    together. Built by hand so that a stored outline goes out as the text it is stored as."""
    parts = [
        f'{{"id":{instance.id},"image_id":{instance.image_id},'
        f'"category_id":{instance.category_id},"iscrowd":{int(instance.iscrowd)}'
    ]
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
        parts.append(f',"keypoints":{_dumps(list(instance.keypoints))},"num_keypoints":{instance.num_keypoints}')
    if instance.source == Source.MODEL and instance.score is not None:
        parts.append(f',"score":{_dumps(instance.score)}')  # a proposal nobody reviewed says so
    parts.append("}")
    return "".join(parts)


# Images per piece of an export; a piece is a few MB of JSON, and at most two per worker are held.
IMAGES_PER_PIECE = 1000
# Below this many instances an export runs in this process: starting workers would cost more.
PARALLEL_EXPORT_FROM = 50_000


def _annotations_text(
    project: Project, image_ids: tuple[int, int], states: list[ReviewState] | None, rle: bool, min_proposal_score: float
) -> tuple[str, int, list[DamagedRow]]:
    """The annotations of the images ``image_ids``, and the instances left out because what is
    stored for them is damaged (``annotator.damage``)."""
    categories = {c.id: c for c in project.categories()}
    damaged: list[DamagedRow] = []
    pieces = []
    for instance in project.iter_instances(states, image_ids, min_proposal_score, damaged=damaged):
        try:
            if instance.rle is not None and instance.polygons_json is None and not (rle or instance.iscrowd):
                check_instance(instance, full_mask=True)  # its outline is traced: pycocotools decodes it
            if instance.category_id not in categories:
                raise DamagedRow("instances", instance.id, "its category is not there", instance.image_id)
            pieces.append(annotation_json(instance, categories[instance.category_id], rle))
        except DamagedRow as error:
            damaged.append(error)
    return ",\n".join(pieces), len(pieces), damaged


def _annotations_text_in_worker(
    path: str, image_ids: tuple[int, int], states: list[ReviewState] | None, rle: bool, min_proposal_score: float
) -> tuple[str, int, list[DamagedRow]]:
    with Project.open(path, tidy=False) as project:  # the exporting program's project: it only reads
        return _annotations_text(project, image_ids, states, rle, min_proposal_score)


def _image_id_ranges(project: Project, states: list[ReviewState] | None) -> list[tuple[int, int]]:
    ids = [image.id for image in project.iter_images(states=states)]
    return [(ids[i], ids[min(i + IMAGES_PER_PIECE, len(ids)) - 1]) for i in range(0, len(ids), IMAGES_PER_PIECE)]


def _annotation_pieces(
    project: Project, states: list[ReviewState] | None, rle: bool, min_proposal_score: float, workers: int
) -> Iterator[tuple[str, int, list[DamagedRow]]]:
    """The annotations as JSON text, piece by piece in image order (with the damaged instances
    left out of each piece); tracing polygons from masks
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
            pending.append(
                pool.submit(_annotations_text_in_worker, str(project.path), image_ids, states, rle, min_proposal_score)
            )
            if len(pending) >= 2 * workers:  # bounded memory: at most this many pieces held
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def export_coco(
    project: Project,
    path: Path | str,
    only_done: bool = False,
    rle: bool = False,
    proposals_from: float | None = None,
    workers: int | None = None,
    damaged: list[DamagedRow] | None = None,
) -> dict[str, int]:
    """Writes the project as one COCO file (atomically); returns the counts written, and in
    ``proposals_left_out`` how many model proposals were not, in ``damaged_left_out`` how many
    instances were left out because what is stored for them is damaged (named in ``damaged``
    when given). A damaged image or category row, or a damaged file structure, ends the export
    (``DamagedRow``, ``sqlite3.DatabaseError``) with no file written.

    The labels people kept are written; model proposals nobody accepted are left out unless
    ``proposals_from`` is a score, and then those scoring at least that go out too, each with
    its ``score``, and the categories only the model proposed (``Category.proposed``) with them.
    Masks go out as polygons (``iscrowd=0``; holes are lost) unless ``rle`` asks for compressed
    RLE, which keeps every pixel. Crowd regions are always RLE. An outline drawn as polygons goes
    out exactly as drawn. ``workers`` defaults to the number of CPU cores.
    """
    path = Path(path)
    states = [ReviewState.DONE] if only_done else None
    min_proposal_score = math.inf if proposals_from is None else proposals_from
    categories = project.exported_categories(with_proposals=proposals_from is not None)
    counts = {"images": 0, "annotations": 0, "categories": len(categories)}

    def images() -> Iterator[dict]:
        for image in project.iter_images(states=states):
            counts["images"] += 1
            yield {"id": image.id, "file_name": image.file_name, "width": image.width, "height": image.height}

    info = {"description": f"exported from {project.path.name}", "date_created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with AtomicWriter(path) as out:
        out.write('{"info":' + _dumps(info) + ',\n"licenses":[],\n"images":')
        out.writelines(iter_json_array(images()))
        out.write(',\n"annotations":[\n')
        separator = ""
        left_out: list[DamagedRow] = []
        pieces = _annotation_pieces(project, states, rle, min_proposal_score, workers or os.cpu_count() or 1)
        for text, count, damaged_here in pieces:
            left_out += damaged_here
            if count:
                out.write(separator + text)
                separator = ",\n"
                counts["annotations"] += count
        out.write('],\n"categories":')
        out.writelines(iter_json_array(_coco_category(c) for c in categories))
        out.write("}\n")
    counts["damaged_left_out"] = len(left_out)
    # (never below 0: a damaged index can count fewer rows than the table holds)
    counts["proposals_left_out"] = max(0, project.instance_count(states) - counts["annotations"] - len(left_out))
    if damaged is not None:
        damaged += left_out
    return counts
