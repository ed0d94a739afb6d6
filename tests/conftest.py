"""Fixtures shared by the test modules: small image folders and COCO dictionaries on disk."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from tests.files import write_images

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True, scope="session")
def _torch_home_of_the_tests(tmp_path_factory: pytest.TempPathFactory):
    """torch's cache folder, where downloads and the bfloat16 verdicts (model.precision_check) go,
    is the test session's own, also for the programs the tests start: never the user's."""
    before = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch-home"))
    yield
    if before is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = before


@pytest.fixture(autouse=True)
def _collect_due_garbage_between_tests():
    """Once a window exists, the app's collector (annotator.gui.garbage) has switched Python's
    automatic collection off and collects from a timer, which runs only inside an event loop:
    between tests it does its work here, on the main thread, so tests without one do not pile up
    garbage."""
    yield
    if not gc.isenabled():
        from annotator.gui.garbage import collect_on_the_ui_thread

        collect_on_the_ui_thread().collect_due()


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    write_images(folder, [(80, 60), (64, 48), (100, 75)])
    return folder


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"
