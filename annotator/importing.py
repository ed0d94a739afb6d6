"""Importing labels into a project, for ``main.py import`` and the app: a COCO file or a folder of
labelme files, picked by the source, in one transaction. No Qt.

A failed import leaves nothing behind: an existing project is as it was (the transaction rolls
back), and a project file created for the import is removed again, ``-wal`` and ``-shm`` included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from annotator.coco import import_coco
from annotator.interchange import Duplicates, ImportReport
from annotator.labelme import import_labelme
from annotator.store import Project
from model.errors import InputError
from model.images import DEFAULT_MAX_PIXELS


def import_source(
    project: Project, source: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS, duplicates: Duplicates = "skip"
) -> ImportReport:
    """Imports ``source`` into the open ``project`` in one transaction: a folder as labelme
    files, a file as COCO JSON. All or nothing; InputError names the file and the problem."""
    source = Path(source)
    if not source.exists():
        raise InputError(source, "no such file or folder")
    with project.transaction():
        if source.is_dir():
            return import_labelme(project, source, max_pixels, duplicates)
        return import_coco(project, source, max_pixels, duplicates)


@dataclass
class ProjectImport:
    """What ``import_into`` did: the report, and whether it created the project file."""

    path: Path
    report: ImportReport
    created: bool


def _remove_project_file(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)


def import_into(
    path: Path,
    source: Path | str,
    images: Path | str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    duplicates: Duplicates = "skip",
) -> ProjectImport:
    """Imports ``source`` into the project file ``path``, creating the project when there is none
    (its images under ``images``, by default the labelme folder or the COCO file's folder).

    Raises:
        InputError: the source, the image folder or the project cannot be used, or the import
            failed; nothing was changed, and a project created for the import is gone again.
    """
    source = Path(source)
    if not source.exists():
        raise InputError(source, "no such file or folder")
    images = None if images is None else Path(images)
    if images is not None and not images.is_dir():
        raise InputError(images, "not a folder of images")
    created = not path.exists()
    if created:
        project = Project.create(path, images or (source if source.is_dir() else source.parent))
    else:
        project = Project.open(path)
    try:
        with project:
            if images is not None and images.resolve() != project.image_root:
                raise InputError(path, f"the project's images are in {project.image_root}, not {images.resolve()}")
            report = import_source(project, source, max_pixels, duplicates)
    except BaseException:
        if created:  # nothing of a failed import may remain, not even the new project file
            _remove_project_file(path)
        raise
    return ProjectImport(path, report, created)
