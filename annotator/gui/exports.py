"""File > Export labelme JSON… and File > Export YOLO segmentation…: a folder chosen in a dialog,
the export of ``annotator.labelme_export`` or ``annotator.yolo_export`` (what ``main.py export
--format labelme|yolo`` runs), and what it wrote in the status bar, with what it left out or
changed in a message box."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from annotator.folder_export import FolderExport
from annotator.gui.session import Session
from annotator.gui.status_bar import StatusBar
from annotator.labelme_export import export_labelme
from annotator.store import Project
from annotator.wording import counted
from annotator.yolo_export import export_yolo
from model.errors import InputError

# format -> (dialog title, export); the menu's action names are "export_<format>"
FORMATS: dict[str, tuple[str, Callable[[Project, Path], FolderExport]]] = {
    "labelme": ("Export labelme JSON files into a folder", export_labelme),
    "yolo": ("Export a YOLO segmentation dataset into a folder", export_yolo),
}


class FolderExports(QObject):
    """``session()`` gives the open project's session, or None."""

    ACTIONS = tuple(f"export_{name}" for name in FORMATS)  # the menu's actions, enabled while a project is open

    def __init__(self, parent: QWidget, status: StatusBar, session: Callable[[], Session | None]) -> None:
        super().__init__(parent)
        self.window = parent
        self.status = status
        self.session = session

    def choose_folder(self, name: str) -> None:
        """Asks for the folder (starting beside the project file), then exports as ``name``
        (a key of :data:`FORMATS`) into it."""
        session = self.session()
        if session is None:
            self.status.showMessage("Open a project or a folder of images first", 5000)
            return
        title, _ = FORMATS[name]
        folder = QFileDialog.getExistingDirectory(self.window, title, str(session.project.path.parent))
        if folder:
            self.export_to(name, Path(folder))

    def export_to(self, name: str, folder: Path) -> FolderExport | None:
        """Exports the open project as ``name`` into ``folder``; None when it could not be written."""
        try:
            report = FORMATS[name][1](self.session().project, folder)
        except (InputError, OSError) as error:
            text = str(error) if isinstance(error, InputError) else f"{error.filename or folder}: {error.strerror}"
            self.status.showMessage(text, 8000)
            QMessageBox.warning(self.window, "Export", text)
            return None
        summary = report.summary()
        summary = summary[0].upper() + summary[1:]
        self.status.showMessage(summary, 10000)
        lines = report.lines()
        if report.proposals_left_out:
            lines.append(f"{counted(report.proposals_left_out, 'model proposal')} nobody accepted left out")
        if lines:
            QMessageBox.information(self.window, "Export", "\n".join([summary, "", *lines]))
        return report
