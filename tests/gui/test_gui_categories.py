"""The category panel: adding a category with keypoint names and a skeleton through its dialog,
refusals that keep what was typed, renaming, the counts it shows (labels kept, not proposals), and
a category the model proposed, listed only once a label of it is kept."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog

from annotator.gui.category_panel import CategoryDialog
from annotator.store import Project, Source
from tests.gui.driving import (
    BLOBS,
    IMAGE_SIZE,
    answer_dialogs,
    click,
    key,
    load_model,
    open_and_wait,
    write_blob_images,
    zoom_4x,
)


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


def test_deleting_an_unused_category_and_merging_a_used_one_each_undo_in_one_step(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    project = window.session.project
    blob, animal = project.categories()
    square = np.zeros((90, 120), dtype=bool)
    square[10:20, 10:20] = True
    window.session.history.add(window.session.image_id, animal.id, mask=square)
    window.session.history.add(window.session.image_id + 1, animal.id, mask=square)
    window.session.set_current_category(blob.id)
    answer_dialogs(qtbot, [lambda box: box.button(box.StandardButton.Yes).click()])
    window.categories.delete_button.click()  # blob: unused, asks first
    assert [c.name for c in project.categories()] == ["animal"]
    key_undo(window)
    assert [c.name for c in project.categories()] == ["blob", "animal"]

    window.session.set_current_category(animal.id)

    def move_to_blob(dialog) -> None:
        dialog.setTextValue("blob")
        dialog.accept()

    answer_dialogs(qtbot, [move_to_blob])
    window.categories.delete_button.click()  # animal: two labels, merged into blob
    assert [c.name for c in project.categories()] == ["blob"]
    assert {i.category_id for i in project.iter_instances()} == {blob.id}
    assert window.status.currentMessage() == "Merge 'animal' into 'blob' (undo with Ctrl+Z)"
    assert row_texts(window) == ["blob  (2 instances)"]
    key_undo(window)
    assert project.categories() == [blob, animal]
    assert {i.category_id for i in project.iter_instances()} == {animal.id}
    assert all(i.edits == 0 for i in project.iter_instances())  # a merge is no edit of each label


def key_undo(window) -> None:
    window.actions_by_name["undo"].trigger()


def test_a_class_the_model_proposes_joins_the_panel_only_when_a_proposal_of_it_is_accepted(
    qtbot, window, tmp_path: Path
):
    write_blob_images(tmp_path / "images")
    with Project.create(tmp_path / "cells.annot", tmp_path / "images") as project:  # no 'blob' category
        for name in sorted(p.name for p in (tmp_path / "images").iterdir()):
            project.add_image(name, *IMAGE_SIZE, "hash-" + name)
        project.add_category("cell")
    open_and_wait(qtbot, window, tmp_path / "cells.annot")
    load_model(qtbot, window)
    session = window.session
    key(window, Qt.Key.Key_P, Qt.KeyboardModifier.ControlModifier)  # the model finds two blobs
    qtbot.waitUntil(lambda: len(session.instances()) == 2 and not window.proposals.busy, timeout=10000)
    assert row_texts(window) == ["cell  (0 instances)"]
    assert session.current_category.name == "cell"
    assert len(window.canvas.instances) == 2  # its proposals are drawn all the same

    zoom_4x(window)
    x, y, w, h = BLOBS[0]
    click(window, x + w / 2, y + h / 2)
    (selected,) = session.selection
    key(window, Qt.Key.Key_Return)  # accept
    assert session.project.instance(selected).source == Source.HUMAN
    qtbot.waitUntil(lambda: row_texts(window) == ["cell  (0 instances)", "blob  (1 instance)"], timeout=3000)
    assert session.current_category.name == "cell"


def test_with_no_category_of_its_own_a_project_draws_new_shapes_in_the_first_class_it_kept(
    qtbot, window, tmp_path: Path
):
    write_blob_images(tmp_path / "images")
    with Project.create(tmp_path / "bare.annot", tmp_path / "images") as project:  # no category at all
        for name in sorted(p.name for p in (tmp_path / "images").iterdir()):
            project.add_image(name, *IMAGE_SIZE, "hash-" + name)
    open_and_wait(qtbot, window, tmp_path / "bare.annot")
    load_model(qtbot, window)
    key(window, Qt.Key.Key_P, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: len(window.session.instances()) == 2 and not window.proposals.busy, timeout=10000)
    assert window.status.new_shapes.text() == "New shapes: object (new)"  # the proposals' class is not one yet
    assert window.categories.empty_note.isVisible() and row_texts(window) == []  # says how categories come

    zoom_4x(window)
    x, y, w, h = BLOBS[0]
    click(window, x + w / 2, y + h / 2)
    key(window, Qt.Key.Key_Return)  # accept: 'blob' is the person's now
    assert window.status.new_shapes.text().endswith("■</b> blob")
    qtbot.waitUntil(lambda: not window.categories.empty_note.isVisible(), timeout=3000)  # the panel's recount
    assert row_texts(window) == ["blob  (1 instance)"]
    assert window.session.ensure_category().name == "blob"  # what a new shape gets, as the status says
