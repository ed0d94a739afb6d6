"""Opening what the user points at: a project file, or a folder of images (which gets a project
file of its own, ``<folder>/<folder name>.annot``, beside the images so that they move together)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from model.errors import InputError
from annotator.store import PROJECT_SUFFIX, Project
from model.images import ImageInfo, ImageReadError, is_image_file, probe_image


def project_path_for_folder(folder: Path) -> Path:
    return folder / f"{folder.resolve().name or 'images'}{PROJECT_SUFFIX}"


def scan_folder(folder: Path, progress: Callable[[int, int], None] | None = None
                ) -> tuple[list[tuple[str, ImageInfo]], list[str]]:
    """The images under ``folder`` (relative POSIX names with size and hash) and one warning line
    per file that could not be read. Runs off the UI thread."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
    found, warnings = [], []
    for index, file in enumerate(files):
        try:
            found.append((file.relative_to(folder).as_posix(), probe_image(file)))
        except ImageReadError as error:
            warnings.append(str(error))
        if progress is not None:
            progress(index + 1, len(files))
    return found, warnings


def create_folder_project(folder: Path, images: list[tuple[str, ImageInfo]]) -> Project:
    if not images:
        raise InputError(folder, "no readable images here (jpg, png, bmp, tif, webp)")
    project = Project.create(project_path_for_folder(folder), folder)
    with project.transaction():
        for name, info in images:
            project.add_image(name, info.width, info.height, info.sha256)
    return project


def add_new_images(project: Project, images: list[tuple[str, ImageInfo]]) -> int:
    """Adds images of the folder that the project does not hold yet; returns how many."""
    added = 0
    with project.transaction():
        for name, info in images:
            if project.image_by_file_name(name) is None:
                project.add_image(name, info.width, info.height, info.sha256)
                added += 1
    return added
