"""Reviewing in the window through real events: "Done, next" keeps one label per object."""

from __future__ import annotations

from PySide6.QtCore import Qt

from annotator.store import ReviewState, Source
from tests.gui.driving import BLOBS, drag, key, load_model, open_and_wait, wait_for_image, zoom_4x


def test_done_next_discards_a_proposal_on_an_object_already_drawn_and_says_so(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    load_model(qtbot, window)
    first = window.session.image_id
    window.model_control.propose_current()  # a proposal on each of the two blobs
    qtbot.waitUntil(lambda: len(window.session.instances()) == 2 and not window.proposals.busy, timeout=10000)
    zoom_4x(window)
    key(window, Qt.Key.Key_R)  # the box tool: box to mask on the second blob, as a person would
    x, y, w, h = BLOBS[1]
    drag(window, [(x - 3, y - 3), (x + w + 3, y + h + 3)])
    qtbot.waitUntil(lambda: len(window.session.instances()) == 3 and not window.proposals.busy, timeout=10000)
    key(window, Qt.Key.Key_Space)
    wait_for_image(qtbot, window, first + 1)
    kept = window.session.project.instances(first)
    assert len(kept) == 2 and all(i.source == Source.HUMAN for i in kept)  # one label per blob
    assert window.status.currentMessage() == "Done: accepted 1 proposal, discarded 1 duplicate"
    key(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # undo: back on the image, done undone
    for _ in range(2):  # the accept, the discard
        key(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert len(window.session.project.instances(first)) == 3


def test_propose_on_a_done_image_shows_what_is_new_and_says_what_it_left_out(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    load_model(qtbot, window)
    first = window.session.image_id
    window.model_control.propose_current()
    qtbot.waitUntil(lambda: len(window.session.instances()) == 2 and not window.proposals.busy, timeout=10000)
    key(window, Qt.Key.Key_Space)  # both accepted, the image done
    wait_for_image(qtbot, window, first + 1)
    key(window, Qt.Key.Key_A)
    wait_for_image(qtbot, window, first)
    key(window, Qt.Key.Key_P, Qt.KeyboardModifier.ControlModifier)  # Model > Propose for this image
    qtbot.waitUntil(lambda: window.status.currentMessage().startswith("Propose:"), timeout=10000)
    assert window.status.currentMessage() == (
        "Propose: 0 new proposals beside your labels; 2 left out: they repeat what is there"
    )
    assert len(window.session.project.instances(first)) == 2


def test_ctrl_shift_v_copies_the_previous_images_labels(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    first = window.session.image_id
    zoom_4x(window)
    key(window, Qt.Key.Key_R)
    x, y, w, h = BLOBS[0]
    drag(window, [(x, y), (x + w, y + h)])  # no model: a box label
    key(window, Qt.Key.Key_D)
    wait_for_image(qtbot, window, first + 1)
    key(window, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    (copy,) = window.session.project.instances(first + 1)
    assert copy.bbox == (x, y, w, h) and copy.source == Source.HUMAN
    assert window.status.currentMessage() == "Copied 1 label from 00.png"
    assert window.instances.tree.topLevelItemCount() == 1


def test_least_sure_first_sorts_the_list_shows_the_doubt_and_done_next_follows_it(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    project = window.session.project
    for image_id, score in ((2, 0.97), (3, 0.52)):  # the third image's proposal sits at the threshold
        project.add_instance(image_id, 1, bbox=(10, 12, 30, 20), score=score, source=Source.MODEL)
        project.set_review_state(image_id, ReviewState.PROPOSED)
    window.actions_by_name["least_sure"].trigger()
    assert window.images.visible_ids() == [3, 2, 1]
    assert window.images.model.index(0).data().endswith("proposed · unsure 96%")
    key(window, Qt.Key.Key_Space)  # image 1 done: the least sure comes next, not image 2
    wait_for_image(qtbot, window, 3)
