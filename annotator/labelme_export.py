"""Exporting a project as a folder of labelme JSON files, one per image, as labelme 5 writes them.
No Qt.

The image ``a/b.jpg`` (relative to the project's image folder) gets ``OUT/a/b.json``: labelme's
own layout when OUT is the image folder (each file beside its image), a mirror of it elsewhere.
``imagePath`` leads from the JSON file to the image, so labelme opens either, and ``imageData`` is
null (labelme then reads the image from ``imagePath``). The shapes are ``annotator.labelme``'s
reading (and labelme2coco's) in reverse, so importing the folder gives back the labels:

- a mask goes out as polygon shapes: the outline it was drawn as, else the outer outlines traced
  from it, as the COCO export traces them (holes are lost, as in COCO polygons); a box-only label
  as a rectangle, which comes back as a rectangular mask;
- keypoints as point shapes labelled with the keypoint's name; those without a position (v=0) are
  left out, and since labelme has no visibility a hidden one (v=1) comes back as v=2. A category
  new to the importing project takes its keypoint names from the points in order of first
  appearance: in the category's order when its first instance has them all;
- an instance of more than one shape (several outlines, or keypoints) has a ``group_id`` of its
  own in its file linking them; a single shape has none, as labelme draws it;
- a proposal written because of ``proposals_from`` says so, with its score, in ``description``.

Two images whose names differ only in their suffix (``a.png``, ``a.jpg``) would share ``a.json``:
the second gets ``a.jpg.json`` (labelme opens it, but does not find it from the image).
Each file is written atomically; a file of the same name in OUT is replaced.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from annotator.folder_export import FolderExport, gets_file, images_to_export, outlines
from annotator.interchange import AtomicWriter
from annotator.store import Category, ImageRecord, Instance, Project, Source
from model.errors import InputError

# The labelme release whose file format is written (labelme puts its own version there; readers
# take it as the format's)
LABELME_VERSION = "5.5.0"


def _shape(label: str, points: list[list[float]], shape_type: str, group_id: int | None, description: str) -> dict:
    """One shape with the keys labelme 5 writes, in its order."""
    return {
        "label": label,
        "points": points,
        "group_id": group_id,
        "description": description,
        "shape_type": shape_type,
        "flags": {},
        "mask": None,
    }


def _instance_shapes(
    instance: Instance, category: Category, group_ids: Iterator[int], report: FolderExport
) -> list[dict]:
    """The shapes of one instance: its areas (polygons, or a rectangle for a box-only one) and its
    keypoints, under one new ``group_id`` when there is more than one shape."""
    if instance.rle is None:
        x, y, w, h = instance.bbox
        areas = [([[x, y], [x + w, y + h]], "rectangle")]
    else:
        areas = [([[p[i], p[i + 1]] for i in range(0, len(p), 2)], "polygon") for p in outlines(instance)]
    if not areas:
        report.tally("label with an empty mask left out", "labels with empty masks left out")
        return []
    points = []
    if instance.keypoints_array is not None:
        for name, (x, y, v) in zip(category.keypoints, instance.keypoints_array):
            if v > 0:
                points.append((name, [[float(x), float(y)]]))
    group_id = next(group_ids) if len(areas) + len(points) > 1 else None
    description = ""
    if instance.source == Source.MODEL and instance.score is not None:
        description = f"proposal, score {instance.score:.3f}"
    return [_shape(category.name, area, kind, group_id, description) for area, kind in areas] + [
        _shape(name, point, "point", group_id, description) for name, point in points
    ]


def _json_name(file_name: str, taken: set[str]) -> PurePosixPath | None:
    """Where the image's file goes, relative to OUT: ``a/b.json``, or ``a/b.jpg.json`` when an
    image of the same stem has that already (compared without case: some file systems ignore it);
    None when both are taken."""
    image = PurePosixPath(file_name)
    for name in (image.with_suffix(".json"), image.with_name(image.name + ".json")):
        if str(name).casefold() not in taken:
            taken.add(str(name).casefold())
            return name
    return None


def _image_path(project: Project, image: ImageRecord, json_folder: Path) -> str:
    """``imagePath``: the image as seen from the JSON file's folder, with ``/`` (the importer and
    labelme read both separators); absolute when there is no relative way (another drive)."""
    try:
        return PurePosixPath(*Path(os.path.relpath(project.image_path(image), json_folder)).parts).as_posix()
    except ValueError:
        return project.image_path(image).as_posix()


def labelme_file(project: Project, image: ImageRecord, shapes: list[dict], json_folder: Path) -> dict[str, Any]:
    """The labelme 5 file of one image (the keys and order of labelme's ``LabelFile.save``)."""
    return {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": _image_path(project, image, json_folder),
        "imageData": None,
        "imageHeight": image.height,
        "imageWidth": image.width,
    }


def export_labelme(
    project: Project, folder: Path | str, only_done: bool = False, proposals_from: float | None = None
) -> FolderExport:
    """Writes one labelme JSON file per image that has labels or is marked done into ``folder``
    (created when missing), mirroring the images' paths; returns what was written and left out.

    Which labels go out is as for ``coco.export_coco``: those people kept, and proposals scoring
    at least ``proposals_from`` when given.

    Raises:
        InputError: ``folder`` is a file.
        OSError: a file could not be written (those written before stay).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "is a file; a labelme export writes a folder of JSON files")
    real_folder = Path(os.path.realpath(folder))  # imagePath is read from the JSON file's real place
    categories = {category.id: category for category in project.categories()}
    report = FolderExport(folder, "labelme file")
    taken: set[str] = set()
    for image, instances in images_to_export(project, report, only_done, proposals_from):
        group_ids = itertools.count(1)
        shapes, labels = [], 0
        for instance in instances:
            written = _instance_shapes(instance, categories[instance.category_id], group_ids, report)
            labels += bool(written)
            shapes += written
        if not gets_file(image, labels, report):
            continue
        name = _json_name(image.file_name, taken)
        if name is None:
            report.notes.append(f"left out {image.file_name}: other images took both names its file could have")
            continue
        data = labelme_file(project, image, shapes, real_folder / name.parent)
        with AtomicWriter(folder / name) as out:
            json.dump(data, out, ensure_ascii=False, indent=2, allow_nan=False)
            out.write("\n")
        report.files += 1
        report.labels += labels
    return report
