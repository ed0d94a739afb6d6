"""Box-only labels (a detection data set's boxes, docs/decisions/0015) refined into masks in the
window, as a person does it: select the box, Model → Refine boxes to masks (Ctrl+B)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt

from annotator.gui import unavailable
from annotator.store import Project, Source
from tests.gui.driving import BLOBS, click, key, load_model, open_and_wait, zoom_4x

CTRL = Qt.KeyboardModifier.ControlModifier
MARGIN = 3  # the boxes are a little larger than the blobs, as a person draws them


def add_box_labels(project_path: Path) -> tuple[int, list[int]]:
    """A box-only 'blob' label around each blob of the first image."""
    with Project.open(project_path) as project:
        image = next(project.iter_images())
        blob = project.category_by_name("blob")
        ids = [
            project.add_instance(image.id, blob.id, bbox=(x - MARGIN, y - MARGIN, w + 2 * MARGIN, h + 2 * MARGIN)).id
            for x, y, w, h in BLOBS
        ]
    return image.id, ids


def test_refining_a_selected_box_gives_it_the_models_mask_in_place_in_one_undo_step(qtbot, window, blob_project):
    image_id, (first, second) = add_box_labels(blob_project)
    open_and_wait(qtbot, window, blob_project)
    load_model(qtbot, window)
    project = window.session.project
    before = project.instance(first)
    zoom_4x(window)
    x, y, w, h = BLOBS[0]
    click(window, x + w / 2, y + h / 2)  # the select tool picks the box-only label under the click
    assert window.session.selection == [first]
    key(window, Qt.Key.Key_B, CTRL)
    qtbot.waitUntil(lambda: project.instance(first).rle is not None and not window.proposals.busy, timeout=10000)

    refined = project.instance(first)
    mask = refined.mask
    expected = np.zeros_like(mask)
    expected[y : y + h, x : x + w] = True
    assert np.array_equal(mask, expected)  # the blob's own pixels, not the box
    assert refined.bbox == (x, y, w, h) and refined.category_id == before.category_id
    assert refined.source == Source.HUMAN
    assert project.instance(second).rle is None  # not selected: still a box
    assert window.status.currentMessage() == "Refined 1 box into a mask"
    assert window.session.selection == [first]

    key(window, Qt.Key.Key_Z, CTRL)  # one step back: the box it was
    assert project.instance(first).rle is None and project.instance(first).bbox == before.bbox
    key(window, Qt.Key.Key_Z, CTRL | Qt.KeyboardModifier.ShiftModifier)
    assert project.instance(first).rle == refined.rle


def test_with_nothing_selected_every_box_of_the_image_is_refined_and_then_there_is_none_left(
    qtbot, window, blob_project
):
    image_id, ids = add_box_labels(blob_project)
    open_and_wait(qtbot, window, blob_project)
    load_model(qtbot, window)
    project = window.session.project
    window.session.select([])
    key(window, Qt.Key.Key_B, CTRL)
    qtbot.waitUntil(lambda: not window.proposals.busy and project.instance(ids[1]).rle is not None, timeout=10000)
    assert all(project.instance(i).rle is not None for i in ids)
    assert window.status.currentMessage() == "Refined 2 boxes into masks"
    assert window.session.history.undo_text == "Refine boxes to masks"

    key(window, Qt.Key.Key_B, CTRL)  # nothing left to refine: said, and the model is not asked
    assert window.status.currentMessage() == unavailable.NO_BOX_ONLY
    assert not window.proposals.busy
    key(window, Qt.Key.Key_Z, CTRL)  # the two refined in one step
    assert all(project.instance(i).rle is None for i in ids)
