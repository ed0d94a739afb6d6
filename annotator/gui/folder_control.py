"""The project's image folder as the window uses it: making the project of a folder opened for the
first time, finding a folder that moved, saying which images came into the folder (or left it)
since the project last saw it, and File > Add images. The rules are Qt-free
(annotator.image_folder); this wires them to dialogs, the status bar and the image list."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QFileDialog, QMessageBox, QProgressDialog, QWidget

from annotator.gui import unavailable
from annotator.gui.background import run_in_background
from annotator.gui.image_list import ImageListPanel
from annotator.gui.session import Session
from annotator.gui.status_bar import StatusBar
from annotator.image_folder import (
    FolderChanges,
    FolderScan,
    add_images,
    create_project,
    folder_changes,
    project_path_for_folder,
    scan_images,
)
from annotator.store import Project
from annotator.wording import counted
from model.errors import InputError

IMAGE_FILTER = "Images (*.jpg *.jpeg *.png *.bmp *.tif *.tiff *.webp)"


class FolderControl(QObject):
    """``session()`` gives the open project's session, or None."""

    error = Signal(str, str)  # title, text: for the window to show

    def __init__(
        self, parent: QWidget, status: StatusBar, images: ImageListPanel, session: Callable[[], Session | None]
    ) -> None:
        super().__init__(parent)
        self.window = parent
        self.status = status
        self.images = images
        self.session = session

    def locate_moved_images(self, project: Project) -> None:
        """A project whose image folder is not where it was: offer to point it at the new place
        (a folder that holds the project's first image), as the project is opened."""
        first = next(project.iter_images(), None)
        if first is None or project.image_root.is_dir():
            return
        answer = QMessageBox.question(
            self.window,
            "Images not found",
            f"The images of {project.path.name} are not in {project.image_root} any more.\n\nLocate their folder?",
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        folder = QFileDialog.getExistingDirectory(
            self.window, f"The folder that now holds {first.file_name}", str(project.path.parent)
        )
        if not folder:
            return
        if not (Path(folder) / first.file_name).is_file():
            self.error.emit("Images not found", f"{folder} does not hold {first.file_name}; the project is unchanged")
            return
        project.set_image_root(folder)
        self.status.showMessage(f"Images now read from {project.image_root}", 6000)

    def create_project(self, folder: Path, opened: Callable[[Project], None]) -> None:
        """A folder opened for the first time: its images are read on the thread pool, under a
        progress dialog, then its project is made and given to ``opened``."""
        dialog = QProgressDialog(f"Reading the images in {folder}…", "", 0, 0, self.window)
        dialog.setCancelButton(None)
        dialog.setWindowModality(Qt.WindowModality.WindowModal)
        dialog.setMinimumDuration(300)

        def done(scan: FolderScan) -> None:
            dialog.close()
            try:
                opened(create_project(project_path_for_folder(folder), scan))
            except InputError as error:
                self.error.emit("Open", str(error))
                return
            if scan.unreadable:
                self.error.emit("Some images were left out", "\n".join(scan.warnings()[:20]))

        def failed(message: str) -> None:
            dialog.close()
            self.error.emit("Open", message)

        run_in_background(lambda: scan_images(folder), done, failed)

    def notice_changes(self, project: Project) -> None:
        """Says in the status bar which images came into the folder, or left it, since the project
        last saw it, until they are added (the folder is listed off the UI thread; nothing is
        decoded)."""
        known = {image.file_name for image in project.iter_images()}
        self.status.set_folder_notice("")

        def done(changes: FolderChanges) -> None:
            session = self.session()
            if session is not None and session.project is project:
                self.status.set_folder_notice(changes.message())

        run_in_background(lambda: folder_changes(project.image_root, known), done, lambda message: None)

    def add_images(self) -> None:
        """File > Add images: image files (under the project's image folder) chosen in a dialog."""
        session = self.session()
        if session is None:
            self.status.showMessage(unavailable.NO_PROJECT, unavailable.MESSAGE_MS)
            return
        names, _ = QFileDialog.getOpenFileNames(
            self.window, "Add images to the project", str(session.project.image_root), IMAGE_FILTER
        )
        if names:
            self.add(session, [Path(name) for name in names])

    def add(self, session: Session, paths: list[Path]) -> None:
        """Adds ``paths`` (files, or folders of images) to the project and shows them in the list."""
        report = add_images(session.project, paths)
        self.images.model.reload()
        self.images.update_counts()
        self.images.show_current(session.image_id)
        if report.problems:
            self.error.emit("Some images were not added", "\n".join(report.problems[:20]))
        known = f" ({report.known} were in the project already)" if report.known else ""
        self.status.showMessage(f"Added {counted(report.added, 'image')}{known}", 8000)
        self.notice_changes(session.project)
