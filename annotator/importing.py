"""Importing labels into a project, for ``main.py import`` and the app: a COCO file or a folder of
labelme files, picked by the source, in one transaction. No Qt.

A failed import leaves nothing behind: an existing project is as it was (the transaction rolls
back), and a project created for the import never appears (it is built under a temporary name,
``Project.create``). Files are read before the write lock is taken; what the import checks
against the project and what it writes share one transaction, so another program's edit made
meanwhile is seen, never overwritten or run into.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from annotator.coco import import_coco
from annotator.interchange import Duplicates, ImportReport
from annotator.labelme import import_labelme
from annotator.project_file import ProjectExists
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
    project.check_writable()
    if source.is_dir():
        return import_labelme(project, source, max_pixels, duplicates)
    return import_coco(project, source, max_pixels, duplicates)


@dataclass
class ProjectImport:
    """What ``import_into`` did: the report, and whether it created the project file."""

    path: Path
    report: ImportReport
    created: bool


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
            failed; nothing was changed, and no project was created for the import.
    """
    source = Path(source)
    if not source.exists():
        raise InputError(source, "no such file or folder")
    images = None if images is None else Path(images)
    if images is not None and not images.is_dir():
        raise InputError(images, "not a folder of images")
    if not path.exists():
        reports: list[ImportReport] = []
        try:
            Project.create(
                path,
                images or (source if source.is_dir() else source.parent),
                fill=lambda project: reports.append(import_source(project, source, max_pixels, duplicates)),
            ).close()
            return ProjectImport(path, reports[0], True)
        except ProjectExists:
            pass  # another program made the project meanwhile: import into theirs
    with Project.open(path) as project:
        if images is not None and images.resolve() != project.image_root:
            raise InputError(path, f"the project's images are in {project.image_root}, not {images.resolve()}")
        report = import_source(project, source, max_pixels, duplicates)
    return ProjectImport(path, report, False)
