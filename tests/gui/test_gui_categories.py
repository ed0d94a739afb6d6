"""The category panel: adding a category with keypoint names and a skeleton through its dialog,
refusals that keep what was typed, renaming, and the counts it shows (labels kept, not proposals)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6.QtWidgets import QDialog

from annotator.gui.category_panel import CategoryDialog
from annotator.store import Source
from tests.gui.driving import answer_dialogs, open_and_wait


def fill(name: str, keypoints: str = "", skeleton: str = "") -> Callable[[QDialog], None]:
    def answer(dialog: QDialog) -> None:
        assert isinstance(dialog, CategoryDialog)
        dialog.name.setText(name)
        dialog.keypoints.setPlainText(keypoints)
        dialog.skeleton.setPlainText(skeleton)
        dialog.accept()

    return answer


def ok(dialog: QDialog) -> None:
    dialog.accept()


def row_texts(window) -> list[str]:
    return [window.categories.list.item(i).text() for i in range(window.categories.list.count())]


def test_adding_a_category_with_keypoints_and_a_skeleton_makes_it_current(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    answer_dialogs(qtbot, [fill("bird", "beak\nleft wing\nright wing", "beak - left wing\n1-3")])
    window.categories.add_category()

    bird = [c for c in window.session.project.categories() if c.name == "bird"][0]
    assert bird.keypoints == ("beak", "left wing", "right wing")
    assert bird.skeleton == ((1, 2), (1, 3))
    assert window.session.current_category_id == bird.id
    assert row_texts(window)[-1] == "bird  (0 instances, 3 keypoints)"
    assert window.categories.list.currentItem().text() == row_texts(window)[-1]


def test_a_refused_category_shows_why_and_the_dialog_keeps_what_was_typed(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    before = window.session.project.categories()
    seen = []

    def look_then_retry(name: str, skeleton: str) -> Callable[[QDialog], None]:
        def answer(dialog: QDialog) -> None:
            seen.append((dialog.name.text(), dialog.keypoints.toPlainText(), dialog.skeleton.toPlainText()))
            dialog.name.setText(name)
            dialog.skeleton.setPlainText(skeleton)
            dialog.accept()

        return answer

    warnings = answer_dialogs(
        qtbot,
        [
            fill("fish", "head\ntail", "head - fin"),
            ok,  # no keypoint 'fin'
            look_then_retry("blob", "head - tail"),
            ok,  # a name in use
            look_then_retry("fish", "head - tail"),
        ],
    )
    window.categories.add_category()

    assert warnings == [
        "Not saved: skeleton line 1: no keypoint 'fin'",
        "Not saved: there is already a category named 'blob' (id 1)",
    ]
    assert seen == [("fish", "head\ntail", "head - fin"), ("blob", "head\ntail", "head - tail")]
    after = window.session.project.categories()
    assert after[: len(before)] == before
    assert [(c.name, c.keypoints, c.skeleton) for c in after[len(before) :]] == [("fish", ("head", "tail"), ((1, 2),))]


def test_renaming_the_current_category_keeps_its_instances_and_updates_the_counts(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    session = window.session
    mask = np.zeros((90, 120), dtype=bool)
    mask[10:20, 10:30] = True
    session.project.add_instance(session.image_id, 1, mask=mask, source=Source.HUMAN)
    session.project.add_instance(session.image_id, 1, mask=mask, score=0.3, source=Source.MODEL)  # a draft
    session.set_current_category(1)
    answer_dialogs(qtbot, [fill("cell")])
    window.categories.edit_category()

    assert session.project.category(1).name == "cell"
    assert [i.category_id for i in session.project.instances(session.image_id)] == [1, 1]
    assert row_texts(window)[0] == "cell  (1 instance)"  # the label kept, not the proposal
