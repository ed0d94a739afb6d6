"""Fixtures shared by the test modules: small image folders and COCO dictionaries on disk."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


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


def write_images(folder: Path, sizes: list[tuple[int, int]], seed: int = 0) -> list[str]:
    """Writes PNGs ``0.png, 1.png, ...`` of the given ``(width, height)``; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for index, (width, height) in enumerate(sizes):
        name = f"{index}.png"
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(folder / name)
        names.append(name)
    return names


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    write_images(folder, [(80, 60), (64, 48), (100, 75)])
    return folder
