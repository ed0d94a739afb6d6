"""Fixtures of the model tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.synthetic import generate


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 128 x 128 synthetic images with masks and keypoints: ``annotations.json`` + ``images/``."""
    return generate(tmp_path_factory.mktemp("shapes"), 4, seed=3, size=(128, 128), min_shapes=2, max_shapes=3)
