"""Making a project over a folder of images: ``main.py new``, opening a folder in the app, and the
demo project all go through here; so do noticing images added to (or gone from) the folder since,
and adding them (``main.py add``, File > Add images). Qt-free.

Image paths in the project are relative to the folder (POSIX separators), so that a project and
its images can move together. Every image is decoded once here (``probe_image``): a file that
does not decode is found now, not when someone opens it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from annotator.store import PROJECT_SUFFIX, Project
from annotator.wording import counted
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


@dataclass
class FolderChanges:
    """How the project's image folder differs from the project: image files that are not in the
    project (``new``, paths) and project images whose file is gone (``missing``, file names)."""

    new: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def message(self) -> str:
        """A line for the status bar, "" when the folder and the project agree."""
        parts = []
        if self.new:
            parts.append(f"{counted(len(self.new), 'new image')} in the folder (File > Add images… adds them)")
        if self.missing:
            shown = ", ".join(self.missing[:3]) + (", …" if len(self.missing) > 3 else "")
            parts.append(f"{counted(len(self.missing), 'image')} missing ({shown})")
        return "; ".join(parts)


def folder_changes(root: Path, known: set[str]) -> FolderChanges:
    """Compares the image files under a project's image ``root`` with the file names of its images
    (``known``), by name only: no decoding, so that it can run each time a project opens (off the
    UI thread; the caller reads ``known`` from the project). A root that is gone is not looked at
    (the window offers to locate it)."""
    if not root.is_dir():
        return FolderChanges()
    on_disk = {path.relative_to(root).as_posix(): path for path in image_files(root)}
    return FolderChanges(
        new=[path for name, path in on_disk.items() if name not in known],
        missing=sorted(name for name in known if name not in on_disk),
    )


@dataclass
class AddReport:
    """What :func:`add_images` did: the images added, those the project had already, and a
    one-line problem for each file that could not be added."""

    added: int = 0
    known: int = 0
    problems: list[str] = field(default_factory=list)


def add_images(project: Project, paths: list[Path], max_pixels: int = DEFAULT_MAX_PIXELS) -> AddReport:
    """Adds image files (and the images under folders) that are under the project's image root,
    in one transaction, as unlabeled images; each is decoded once (``probe_image``) as at creation.
    A file outside the image root, one that is not an image, or one that does not decode is left
    out with a line saying why; one the project has already is counted as ``known``."""
    root = project.image_root.resolve()
    report = AddReport()
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += image_files(path)
        elif not path.is_file() or not is_image_file(path):
            report.problems.append(str(InputError(path, "not an image file (jpg, png, bmp, tif, webp)")))
        else:
            files.append(path)
    found: dict[str, ImageInfo] = {}
    for file in files:
        try:
            name = file.resolve().relative_to(root).as_posix()
        except ValueError:
            report.problems.append(str(InputError(file, f"not under the project's image folder {root}; copy it there")))
            continue
        if name in found or project.image_by_file_name(name) is not None:
            report.known += 1
            continue
        try:
            found[name] = probe_image(file, max_pixels)
        except ImageReadError as error:
            report.problems.append(str(error))
    with project.transaction():
        for name, info in found.items():
            project.add_image(name, info.width, info.height, info.sha256)
    report.added = len(found)
    return report
