"""Making a project over a folder of images: ``main.py new``, opening a folder in the app, and the
demo project all go through here. Qt-free.

Image paths in the project are relative to the folder (POSIX separators), so that a project and
its images can move together. Every image is decoded once here (``probe_image``): a file that
does not decode is found now, not when someone opens it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from annotator.store import PROJECT_SUFFIX, Project
from model.errors import InputError
from model.images import DEFAULT_MAX_PIXELS, ImageInfo, ImageReadError, is_image_file, probe_image

# progress(images read, images in all)
ScanProgress = Callable[[int, int], None]


@dataclass
class FolderScan:
    """What ``scan_images`` found: each readable image by its name relative to the folder, and an
    error for each file that has an image suffix but cannot be used."""

    folder: Path
    images: list[tuple[str, ImageInfo]] = field(default_factory=list)
    unreadable: list[ImageReadError] = field(default_factory=list)

    def warnings(self) -> list[str]:
        return [str(error) for error in self.unreadable]


def project_path_for_folder(folder: Path) -> Path:
    """Where the app keeps the project of a folder it opens: ``<folder>/<folder name>.annot``."""
    return folder / f"{folder.resolve().name or 'images'}{PROJECT_SUFFIX}"


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` (searched recursively, regular files only), sorted."""
    if not folder.is_dir():
        raise InputError(folder, "not a folder of images")
    return sorted(path for path in folder.rglob("*") if is_image_file(path) and path.is_file())


def scan_images(folder: Path, max_pixels: int = DEFAULT_MAX_PIXELS, progress: ScanProgress | None = None) -> FolderScan:
    """Decodes every image under ``folder``; slow for large folders, so the app runs it off the UI
    thread. ``progress`` is called after each file."""
    files = image_files(folder)
    scan = FolderScan(folder)
    for index, file in enumerate(files):
        try:
            scan.images.append((file.relative_to(folder).as_posix(), probe_image(file, max_pixels)))
        except ImageReadError as error:
            scan.unreadable.append(error)
        if progress is not None:
            progress(index + 1, len(files))
    return scan


def check_new_project(path: Path) -> None:
    """Refuses a project path that is taken (checked before a long scan, and again at creation)."""
    if path.exists():
        raise InputError(path, "a project already exists here; use 'import' to add to it")


def create_project(path: Path, scan: FolderScan) -> Project:
    """A new project at ``path`` holding the images of ``scan`` (in one transaction), open.

    Raises:
        InputError: the folder holds no readable image, or a project exists at ``path``.
    """
    check_new_project(path)
    if not scan.images:
        raise InputError(scan.folder, "no readable images here (jpg, png, bmp, tif, webp)")
    project = Project.create(path, scan.folder)
    with project.transaction():
        for name, info in scan.images:
            project.add_image(name, info.width, info.height, info.sha256)
    return project
