"""Deleting and merging categories through the undo history, without a window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from annotator.commands import UndoStack
from annotator.store import Project


@pytest.fixture
def history(tmp_path: Path) -> UndoStack:
    project = Project.create(tmp_path / "c.annot", tmp_path)
    project.add_image("a.png", 20, 10, "h")
    yield UndoStack(project)
    project.close()


def square() -> np.ndarray:
    mask = np.zeros((10, 20), dtype=bool)
    mask[2:6, 2:6] = True
    return mask


def test_a_category_in_use_is_not_deleted_without_a_place_for_its_instances(history: UndoStack) -> None:
    cell = history.project.add_category("cell")
    history.add(1, cell.id, mask=square())
    with pytest.raises(ValueError, match="1 instances are 'cell'"):
        history.delete_category(cell.id)
    assert history.project.categories() == [cell] and len(history) == 1


def test_merging_moves_instances_keeps_matching_keypoints_and_redo_repeats_it(history: UndoStack) -> None:
    project = history.project
    cat = project.add_category("cat", keypoints=["nose", "tail"])
    dog = project.add_category("dog", keypoints=["snout", "tip"])
    bird = project.add_category("bird")
    moved = history.add(1, cat.id, mask=square(), keypoints=[3, 3, 2, 5, 5, 2])
    command = history.delete_category(cat.id, move_to=dog.id)
    assert command.text == "Merge 'cat' into 'dog'"
    assert project.instance(moved.id).keypoints == moved.keypoints  # two keypoints each: they move along
    history.delete_category(dog.id, move_to=bird.id)
    assert project.instance(moved.id).keypoints is None  # bird has none
    history.undo()
    history.undo()
    assert project.categories() == [cat, dog, bird] and project.instance(moved.id) == moved
    history.redo()
    assert [c.name for c in project.categories()] == ["dog", "bird"]
    assert project.instance(moved.id).category_id == dog.id
    with pytest.raises(ValueError, match="itself"):
        history.delete_category(dog.id, move_to=dog.id)
