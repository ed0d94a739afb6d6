"""Actions that can do nothing say why in the status bar (issue 16, item 8), pressed as a person
presses them: greyed actions' shortcuts, and enabled actions with nothing to act on."""

from __future__ import annotations

from PySide6.QtCore import Qt

from annotator.gui import unavailable
from annotator.store import Source
from tests.gui.driving import (
    BlobPredictor,
    drag,
    key,
    load_model,
    make_window,
    open_and_wait,
    wait_for_image,
    zoom_4x,
)

CTRL = Qt.KeyboardModifier.ControlModifier
SHIFT = Qt.KeyboardModifier.ShiftModifier


def said(window) -> str:
    return window.status.currentMessage()


def test_without_a_project_the_greyed_actions_keys_say_to_open_one_first(qtbot, window):
    for pressed, modifiers in (
        (Qt.Key.Key_Space, Qt.KeyboardModifier.NoModifier),  # done, next: disabled
        (Qt.Key.Key_Z, CTRL),  # undo: disabled
        (Qt.Key.Key_P, CTRL),  # propose: disabled
        (Qt.Key.Key_F, Qt.KeyboardModifier.NoModifier),  # fit: enabled, no image to fit
        (Qt.Key.Key_Return, Qt.KeyboardModifier.NoModifier),  # accept: enabled, nothing to accept
    ):
        window.status.clearMessage()
        key(window, pressed, modifiers)
        assert said(window) == unavailable.NO_PROJECT, pressed


def test_with_nothing_to_act_on_review_keys_say_why_and_change_nothing(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    first = window.session.image_id
    key(window, Qt.Key.Key_Z, CTRL)
    assert said(window) == unavailable.NOTHING_TO_UNDO
    key(window, Qt.Key.Key_Z, CTRL | SHIFT)
    assert said(window) == unavailable.NOTHING_TO_REDO
    key(window, Qt.Key.Key_Return)
    assert said(window) == unavailable.NOTHING_SELECTED
    key(window, Qt.Key.Key_Delete)
    assert said(window) == unavailable.NOTHING_SELECTED
    key(window, Qt.Key.Key_Return, SHIFT)
    assert said(window) == unavailable.NO_PROPOSALS_SHOWN
    key(window, Qt.Key.Key_Escape)
    assert said(window) == unavailable.NOTHING_TO_CANCEL
    key(window, Qt.Key.Key_A)
    assert said(window) == "This is the first image of the list"
    assert window.session.image_id == first
    assert window.session.project.instances(first) == [] and not window.session.history.can_undo


def test_accepting_a_label_that_is_no_proposal_says_it_is_a_label_already(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    zoom_4x(window)
    key(window, Qt.Key.Key_R)
    drag(window, [(60, 40), (85, 70)])  # a box label (no model: the box), selected
    (label,) = window.session.instances()
    assert label.source == Source.HUMAN and window.session.selection == [label.id]
    key(window, Qt.Key.Key_Return)
    assert said(window) == unavailable.NOTHING_TO_ACCEPT
    window.session.set_locked(label.id, True)
    key(window, Qt.Key.Key_Delete)
    assert said(window) == unavailable.SELECTION_LOCKED
    assert [i.id for i in window.session.instances()] == [label.id]  # still there


def test_the_last_image_and_a_busy_model_say_why_next_and_propose_did_nothing(qtbot, settings, blob_project):
    window = make_window(qtbot, settings, BlobPredictor(delay=1.0))  # each prediction takes a second
    open_and_wait(qtbot, window, blob_project)
    last = window.images.visible_ids()[-1]
    window.show_image(last)
    wait_for_image(qtbot, window, last)
    key(window, Qt.Key.Key_D)
    assert said(window) == "This is the last image of the list" and window.session.image_id == last
    load_model(qtbot, window)
    key(window, Qt.Key.Key_P, CTRL)  # the model thread busy for a second
    qtbot.waitUntil(lambda: window.proposals.busy, timeout=5000)
    key(window, Qt.Key.Key_P, CTRL | SHIFT)  # propose all: greyed while the model works
    assert said(window) == unavailable.MODEL_BUSY
    qtbot.waitUntil(lambda: not window.proposals.busy, timeout=10000)
    window.close()
