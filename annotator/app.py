"""Starting the desktop app.

The annotation window (canvas, tools, proposals) is being built; until then the app opens a real
window that says so and shows what the project holds, so that ``python main.py`` already checks
that Qt starts on the user's machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

from annotator.errors import InputError
from annotator.store import PROJECT_SUFFIX, Project


def describe(path: Path | None, demo: bool) -> str:
    if demo:
        return "The bundled demo project opens here once the annotation window is ready."
    if path is None:
        return "Open a folder of images or a project file: python main.py FOLDER|PROJECT"
    if path.is_dir():
        return (f"Folder {path}: create a project over it with\n"
                f"python main.py new {path.name}{PROJECT_SUFFIX} --images {path}")
    with Project.open(path) as project:
        counts = project.review_state_counts()
        states = ", ".join(f"{count} {state.label}" for state, count in counts.items())
        return f"{path}\n{project.image_count()} images ({states}), {project.instance_count()} instances"


def run_app(path: Path | None = None, demo: bool = False) -> int:
    if path is not None and not path.exists():
        raise InputError(path, "no such folder or project file")
    text = describe(path, demo)
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication, QLabel, QMainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = QMainWindow()
    window.setWindowTitle("Mask R-CNN annotator")
    label = QLabel("The annotation window is coming in the next release.\n\n" + text)
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    label.setMargin(24)
    window.setCentralWidget(label)
    window.resize(720, 360)
    window.show()
    return app.exec()
