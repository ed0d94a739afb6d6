"""Fixtures of the GUI tests: settings of their own, a project of blob images, a window."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from annotator.gui.first_run import OFFERED as FIRST_RUN_OFFERED
from annotator.store import Project
from tests.gui.driving import IMAGE_SIZE, make_window, write_blob_images


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    # answered already: the first project a test opens is not met by the model question
    # (annotator.gui.first_run); a test of that question uses settings without this
    settings.setValue(FIRST_RUN_OFFERED, True)
    return settings


@pytest.fixture
def blob_project(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    write_blob_images(folder)
    path = tmp_path / "blobs.annot"
    with Project.create(path, folder) as project:
        for name in sorted(p.name for p in folder.iterdir()):
            project.add_image(name, *IMAGE_SIZE, "hash-" + name)
        project.add_category("blob")
        project.add_category("animal", keypoints=["head", "tail"], skeleton=[(1, 2)])
    return path


@pytest.fixture
def window(qtbot, settings):
    window = make_window(qtbot, settings)
    yield window
    window.close()
