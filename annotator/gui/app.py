"""Starting the desktop app: ``python main.py [FOLDER | PROJECT] [--demo]``."""

from __future__ import annotations

import sys
from pathlib import Path

from model.errors import InputError


def run_app(path: Path | None = None, demo: bool = False) -> int:
    if path is not None and not path.exists():  # one line of error, before the window's imports
        raise InputError(path, "no such folder or project file")
    from PySide6.QtWidgets import QApplication

    from annotator.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Mask R-CNN annotator")
    app.setOrganizationName("maskrcnn-annotator")
    window = MainWindow()
    window.show()
    if demo:
        from annotator.gui.demo import open_demo

        open_demo(window)
    else:
        window.restore_model()
        if path is not None:
            window.open_path(path)
    return app.exec()
