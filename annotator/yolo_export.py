"""Exporting a project as an Ultralytics YOLO segmentation dataset, the format X-AnyLabeling users
train on. No Qt.

::

    OUT/data.yaml        path (OUT), train and val (both train.txt), names (class id: category)
    OUT/train.txt        the exported images, one ./images/<path> a line
    OUT/images/<path>    a link to each exported image in the project's folder (not a copy)
    OUT/labels/<path with .txt>   a line per label: class x1 y1 x2 y2 ... normalised to [0, 1]

Ultralytics finds an image's labels by putting ``labels`` for the last ``images`` folder in the
image's path, so the images have to appear under ``OUT/images``: as symbolic links to the project's
files, or hard links, or copies where the system refuses links (the report says which). A folder
named ``images`` inside the image folder appears as ``images_``, or its labels would be looked
for beside the images. ``train.txt`` lists exactly the exported images, so links left by an
earlier export are not read; ``val`` is the same list, since no held-out split is made.

Class ids are 0-based, in category id order, every category of the project listed (ids stay the
same from one export to the next, labels or not); a category the model only proposed is listed
only when its proposals go out (``proposals_from``), as in the COCO export. A label is one
polygon: the outline it was drawn as when that is one polygon inside the image, else the outer
outlines traced from its mask (holes are lost). A mask in several parts is still one polygon (a
line of its own would be an object of its own): the parts joined at their nearest vertices by
seams that go there and back, as Ultralytics' own COCO converter joins them. A box-only label
goes out as its box's four corners, and keypoints are left out (not part of YOLO segmentation);
the report says how many.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path, PurePosixPath

import numpy as np

from annotator.folder_export import FolderExport, gets_file, images_to_export, traced_outlines
from annotator.interchange import AtomicWriter
from annotator.store import ImageRecord, Instance, Project
from annotator.wording import counted
from model.errors import InputError


def _closest_vertices(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """The indices of the nearest pair of vertices of ``a`` (N x 2) and ``b`` (M x 2), in blocks of
    ``a`` so that memory stays N-independent."""
    best, pair = np.inf, (0, 0)
    for start in range(0, len(a), 1024):
        distances = ((a[start : start + 1024, None, :] - b[None, :, :]) ** 2).sum(axis=2)
        k = int(distances.argmin())
        if distances.flat[k] < best:
            best, pair = float(distances.flat[k]), (start + k // len(b), k % len(b))
    return pair


def joined_outline(parts: list[np.ndarray]) -> np.ndarray:
    """One polygon (K x 2) that covers what the ``parts`` (each N x 2) cover: each part walked
    round from where the previous one's seam arrives, and at its seam to the next part, the whole
    of the rest walked first and the seam walked back. A seam traversed both ways encloses
    nothing, so filling the polygon gives the parts (plus the seams' own thin lines)."""
    seams = [_closest_vertices(parts[i], parts[i + 1]) for i in range(len(parts) - 1)]
    entries = [0] + [entry for _, entry in seams]
    forward, backward = [], []
    for index, part in enumerate(parts):
        walk = np.roll(part, -entries[index], axis=0)  # from where this part is entered
        back = [part[entries[index] : entries[index] + 1]] if index else []  # closed, to go back along the seam
        if index == len(parts) - 1:
            forward += [walk, *back]
            break
        exit_at = (seams[index][0] - entries[index]) % len(part)
        forward.append(walk[: exit_at + 1])
        backward.append([walk[exit_at : exit_at + 1], walk[exit_at + 1 :], *back])
    for pieces in reversed(backward):
        forward += pieces
    return np.concatenate(forward)


def label_outline(instance: Instance, width: int, height: int) -> tuple[np.ndarray | None, str]:
    """The label's polygon in pixels (K x 2) and what it is: ``drawn``, ``traced`` or ``box``;
    None for an empty mask."""
    if instance.rle is None:
        x, y, w, h = instance.bbox
        return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], dtype=np.float64), "box"
    drawn = instance.polygons or ()
    if len(drawn) == 1:
        polygon = np.asarray(drawn[0], dtype=np.float64).reshape(-1, 2)
        if (polygon >= 0).all() and (polygon <= (width, height)).all():
            return polygon, "drawn"
    parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in traced_outlines(instance)]
    return (joined_outline(parts) if parts else None), "traced"


def label_line(class_id: int, polygon: np.ndarray, width: int, height: int) -> str:
    """``class x1 y1 x2 y2 ...`` with the coordinates divided by the image's size and kept in
    [0, 1] (Ultralytics refuses the whole image for one coordinate outside)."""
    normalised = np.clip(polygon / (width, height), 0.0, 1.0)
    return f"{class_id} " + " ".join(f"{v:.6f}" for v in normalised.ravel())


def _link_name(file_name: str) -> PurePosixPath:
    """The image's path under OUT/images: its path in the image folder, with folders named
    ``images`` renamed ``images_`` (Ultralytics reads the last ``images`` folder of a path)."""
    parts = PurePosixPath(file_name).parts
    return PurePosixPath(*["images_" if part == "images" else part for part in parts[:-1]], parts[-1])


def _link(source: Path, link: Path) -> str:
    """Makes ``link`` show the image ``source``; returns how: ``symbolic``, ``hard`` or ``copy``,
    or ``kept`` for a file that is there already (an earlier export's, or the user's copy)."""
    if link.is_symlink():
        if os.readlink(link) == str(source):
            return "kept"
        link.unlink()
    elif link.exists():
        return "kept"
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        link.symlink_to(source)
        return "symbolic"
    except OSError:  # Windows without the right to make symbolic links
        pass
    try:
        os.link(source, link)
        return "hard"
    except OSError:  # another drive
        shutil.copy2(source, link)
        return "copy"


def write_data_yaml(path: Path, folder: Path, names: dict[int, str], source: str) -> None:
    """``data.yaml`` as Ultralytics reads it; strings as JSON strings, which YAML reads alike."""
    lines = [
        f"# Ultralytics YOLO segmentation dataset, exported from {source}",
        "# class ids are 0-based, in the project's category id order; keypoints are not part of it",
        f"path: {json.dumps(str(folder), ensure_ascii=False)}",
        "train: train.txt",
        "val: train.txt  # the same images: no held-out split was made",
        "names:",
        *(f"  {class_id}: {json.dumps(name, ensure_ascii=False)}" for class_id, name in names.items()),
    ]
    with AtomicWriter(path) as out:
        out.write("\n".join(lines) + "\n")


def _image_labels(
    instances: list[Instance], image: ImageRecord, class_ids: dict[int, int], report: FolderExport
) -> list[str]:
    lines = []
    for instance in instances:
        polygon, kind = label_outline(instance, image.width, image.height)
        if polygon is None:
            report.tally("label with an empty mask left out", "labels with empty masks left out")
            continue
        if kind == "box":
            report.tally(
                "box-only label written as its box's 4 corners", "box-only labels written as their boxes' 4 corners"
            )
        if instance.keypoints is not None and instance.num_keypoints:
            report.tally(
                "label's keypoints left out (YOLO segmentation has none)",
                "labels' keypoints left out (YOLO segmentation has none)",
            )
        lines.append(label_line(class_ids[instance.category_id], polygon, image.width, image.height))
    return lines


def export_yolo(
    project: Project, folder: Path | str, only_done: bool = False, proposals_from: float | None = None
) -> FolderExport:
    """Writes the project as an Ultralytics YOLO segmentation dataset into ``folder`` (created
    when missing): a label file for each image that has labels or is marked done, its link under
    ``images/``, ``train.txt`` and ``data.yaml``. Returns what was written and left out.

    Which labels go out is as for ``coco.export_coco``: those people kept, and proposals scoring
    at least ``proposals_from`` when given.

    Raises:
        InputError: ``folder`` is a file.
        OSError: a file could not be written (those written before stay).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "is a file; a YOLO export writes a folder")
    exported = project.exported_categories(with_proposals=proposals_from is not None)
    names = dict(enumerate(c.name for c in exported))  # YOLO class id -> category name
    class_ids = {c.id: index for index, c in enumerate(exported)}
    report = FolderExport(folder, "YOLO label file")
    listed, taken, links = [], set(), {}
    for image, instances in images_to_export(project, report, only_done, proposals_from):
        lines = _image_labels(instances, image, class_ids, report)
        if not gets_file(image, len(lines), report):
            continue
        name = _link_name(image.file_name)
        label = name.with_suffix(".txt")
        if str(label).casefold() in taken:  # a.png and a.jpg: Ultralytics reads a.txt for both
            report.notes.append(f"left out {image.file_name}: another image's labels are labels/{label} already")
            continue
        taken.add(str(label).casefold())
        with AtomicWriter(folder / "labels" / label) as out:
            out.write("".join(line + "\n" for line in lines))
        how = _link(project.image_path(image), folder / "images" / name)
        links[how] = links.get(how, 0) + 1
        listed.append(f"./images/{name}")
        report.files += 1
        report.labels += len(lines)
    with AtomicWriter(folder / "train.txt") as out:
        out.write("".join(line + "\n" for line in listed))
    write_data_yaml(folder / "data.yaml", Path(os.path.realpath(folder)), names, project.path.name)
    report.notes += _link_notes(links, folder)
    report.notes.append(
        f"data.yaml names {counted(len(names), 'class', 'classes')}: ids 0-based, in the project's category id order"
    )
    return report


def _link_notes(links: dict[str, int], folder: Path) -> list[str]:
    words = {
        "symbolic": "linked to the project's image folder",
        "hard": "hard-linked (the system refused symbolic links)",
        "copy": "copied (the system refused links)",
    }
    return [
        f"{counted(count, 'image')} {words[how]} under {folder / 'images'}"
        for how, count in links.items()
        if how in words
    ]
