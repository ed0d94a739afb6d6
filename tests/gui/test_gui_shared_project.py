"""The project file shared, or read-only, while the window shows it (issue 17), driven by real key
presses and clicks. A project that cannot be written opens as a read-only view: the title and the
status bar say so and why, edits are refused in one line, nothing writes by itself, and the file's
bytes stay as they were. Another program's changes (a second connection to the file) show within
seconds, the person's selection stays, and an undo step that would overwrite them is refused.

Permissions bind root (who runs these tests in CI) only while it takes a user's ids: the read-only
tests run their window as ``nobody`` for the while (the saved user id stays root's, so it comes
back), in a folder outside root's own temporary one."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from annotator.commands import EditConflict, UndoStack
from annotator.image_folder import project_path_for_folder
from annotator.project_file import ProjectReadOnly
from annotator.store import Project, ReviewState, Source
from tests.files import reachable_by_other_users
from tests.gui.driving import (
    click,
    drag,
    key,
    load_model,
    open_and_wait,
    wait_for_image,
    warnings_shown,
    write_blob_images,
    zoom_4x,
)

NOBODY = 65534
# delete, accept, done and next, the brush, the polygon, the box, undo
EDITING_KEYS = [
    *((k, Qt.KeyboardModifier.NoModifier) for k in (Qt.Key.Key_Delete, Qt.Key.Key_Return, Qt.Key.Key_Space)),
    *((k, Qt.KeyboardModifier.NoModifier) for k in (Qt.Key.Key_B, Qt.Key.Key_P, Qt.Key.Key_R)),
    (Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier),
]
READ_ONLY_LINE = "read-only: the file or its folder cannot be written; copy it somewhere writable to change it"


@contextmanager
def as_reader() -> Iterator[None]:
    """This process as a user that file permissions apply to (root: ``nobody``, until the block ends)."""
    if os.geteuid() != 0:
        yield
        return
    with reachable_by_other_users():  # modules imported lazily are read as nobody
        try:
            os.setresgid(NOBODY, NOBODY, 0)
            os.setresuid(NOBODY, NOBODY, 0)
        except OSError:
            os.setresgid(0, 0, 0)
            pytest.skip("root without the right to take another user's ids: every file is writable")
        try:
            yield
        finally:
            os.setresuid(0, 0, 0)
            os.setresgid(0, 0, 0)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder the reader can reach (pytest's tmp_path is root's own)."""
    folder = Path(tempfile.mkdtemp(prefix="gui-read-only-"))
    folder.chmod(0o755)
    yield folder
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
    shutil.rmtree(folder)


def _labelled_project(folder: Path) -> tuple[Path, int]:
    """A project of three blob images, the first with one label and one proposal; its path and the
    label's id."""
    write_blob_images(folder / "images")
    path = folder / "blobs.annot"
    with Project.create(path, folder / "images") as project:
        for name in ("00.png", "01.png", "02.png"):
            project.add_image(name, 120, 90, "hash-" + name)
        blob = project.add_category("blob")
        mask = np.zeros((90, 120), dtype=bool)
        mask[12:32, 10:40] = True
        label = project.add_instance(1, blob.id, mask=mask)
        proposal = np.zeros((90, 120), dtype=bool)
        proposal[40:70, 60:85] = True
        project.add_instance(1, blob.id, mask=proposal, score=0.9, source=Source.MODEL, model_version="m@1")
    return path, label.id


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_read_only_project_file_is_shown_read_only_and_every_edit_is_refused_in_one_line(qtbot, window, shared):
    path, label_id = _labelled_project(shared)
    path.chmod(0o444)
    shared.chmod(0o777)  # the folder can be written: SQLite may keep its -shm index beside the file
    before = _digest(path)
    out = shared / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    with as_reader():
        open_and_wait(qtbot, window, path)
        assert window.session.project.read_only
        assert window.windowTitle() == "blobs.annot (read-only) — Mask R-CNN annotator"
        notice = window.status.read_only
        assert notice.isVisible() and notice.text() == "<b>Read-only</b>: the file cannot be written"
        assert notice.toolTip() == f"{path} cannot be written; copy the project somewhere writable to change it"
        zoom_4x(window)
        click(window, 20, 20)  # selecting reads only
        assert window.session.selection == [label_id]
        for pressed, modifiers in EDITING_KEYS:
            window.status.clearMessage()
            key(window, pressed, modifiers)
            assert window.status.currentMessage() == f"{path}: {READ_ONLY_LINE}"
        assert window.canvas.tool.name == "select"
        assert not window.actions_by_name["tool_brush"].isEnabled()
        assert not window.actions_by_name["done_next"].isEnabled()
        assert not window.instances.accept_button.isEnabled() and not window.instances.reject_button.isEnabled()
        drag(window, [(100, 80), (90, 70)])  # empty space: the view pans
        # the category list's double click would open the editor: it says why not instead
        window.status.clearMessage()
        item = window.categories.list.item(0)
        QTest.mouseDClick(
            window.categories.list.viewport(),
            Qt.MouseButton.LeftButton,
            Qt.KeyboardModifier.NoModifier,
            window.categories.list.visualItemRect(item).center(),
        )
        assert READ_ONLY_LINE in window.status.currentMessage()
        # browsing, zooming, hiding the overlays and exporting elsewhere keep working
        key(window, Qt.Key.Key_D)
        wait_for_image(qtbot, window, 2)
        key(window, Qt.Key.Key_A)
        wait_for_image(qtbot, window, 1)
        key(window, Qt.Key.Key_H)
        assert not window.canvas.overlays_visible
        key(window, Qt.Key.Key_1)
        assert window.canvas.scale == 1.0
        counts = window.export_to(out / "all.json")
        assert counts is not None and counts["annotations"] == 1
        # what writes by itself leaves it alone: active time, a model's proposals on opening an image
        window.activity.input(time.monotonic())  # the meter follows the image in view
        window.activity.pending = 12.0
        window.activity.flush()
        load_model(qtbot, window)
        assert not window.actions_by_name["propose"].isEnabled()
        window.actions_by_name["auto_propose"].setChecked(True)
        key(window, Qt.Key.Key_D)
        wait_for_image(qtbot, window, 2)
        qtbot.wait(300)
        assert window.predictor.calls == 0 and not window.proposals.busy
        window.close()
    assert _digest(path) == before
    with Project.open(path) as project:
        assert [i.id for i in project.instances(1)] == [label_id, label_id + 1]
        assert project.image(1).active_seconds == 0 and project.image(1).state == ReviewState.UNLABELED


def test_a_project_in_a_read_only_folder_is_read_only_until_a_writable_one_opens(qtbot, window, shared, tmp_path):
    project_folder = shared / "project"
    project_folder.mkdir()
    path, label_id = _labelled_project(project_folder)
    path.chmod(0o666)  # the file could be written; its folder cannot
    project_folder.chmod(0o555)
    before, files = _digest(path), sorted(project_folder.iterdir())
    bare = shared / "bare"  # a read-only folder of images that has no project yet
    write_blob_images(bare)
    bare.chmod(0o555)
    with as_reader():
        open_and_wait(qtbot, window, path)
        assert window.session.project.read_only
        assert window.status.read_only.text() == "<b>Read-only</b>: its folder cannot be written"
        assert window.status.read_only.toolTip().startswith(f"the folder {project_folder} cannot be written")
        zoom_4x(window)
        click(window, 20, 20)
        key(window, Qt.Key.Key_Delete)
        assert READ_ONLY_LINE in window.status.currentMessage()
        assert window.session.project.instance(label_id).area == 600
        with warnings_shown() as texts:  # its project cannot be made: one line, and the view stays
            window.open_path(bare)
            qtbot.waitUntil(lambda: bool(texts), timeout=10000)
        assert texts == [
            f"{project_path_for_folder(bare)}: cannot make the project file here (Permission denied); "
            "its folder must be writable"
        ]
        assert window.session.project.path == path
        window.activateWindow()  # the window's shortcuts work in the active window only
        qtbot.waitUntil(window.isActiveWindow)
    assert _digest(path) == before and sorted(project_folder.iterdir()) == files
    # a project that can be written, opened next, is edited as ever
    writable, _ = _labelled_project(tmp_path)
    open_and_wait(qtbot, window, writable)
    assert not window.session.project.read_only and not window.status.read_only.isVisible()
    assert window.windowTitle() == "blobs.annot — Mask R-CNN annotator"
    assert window.actions_by_name["tool_brush"].isEnabled() and window.instances.accept_button.isEnabled()
    zoom_4x(window)
    click(window, 20, 20)
    key(window, Qt.Key.Key_Delete)
    assert not window.session.project.id_in_use("instances", label_id)


def _shown_ids(window) -> list[int]:
    tree = window.instances.tree
    return [tree.topLevelItem(row).data(0, Qt.ItemDataRole.UserRole) for row in range(tree.topLevelItemCount())]


def test_another_programs_new_instance_shows_and_the_persons_next_edits_keep_it(qtbot, window, tmp_path):
    path, label_id = _labelled_project(tmp_path)
    open_and_wait(qtbot, window, path)
    zoom_4x(window)
    click(window, 20, 20)
    assert window.session.selection == [label_id]
    with Project.open(path) as other:  # another program, with its own connection
        mask = np.zeros((90, 120), dtype=bool)
        mask[75:88, 5:30] = True
        theirs = other.add_instance(1, other.add_category("tree").id, mask=mask)
        other.set_review_state(2, ReviewState.DONE)
    qtbot.waitUntil(lambda: theirs.id in _shown_ids(window), timeout=5000)
    assert theirs.id in [i.id for i in window.canvas.instances]
    assert window.session.selection == [label_id]  # the person's selection stays
    assert window.categories.list.item(1).text().startswith("tree")
    assert window.images.model.records[1].state == ReviewState.DONE
    assert window.images.filter.itemText(4) == "Done (1)"
    # the person's edits go on around it: a brush stroke into the selected label, a polygon, an undo
    key(window, Qt.Key.Key_B)
    window.canvas.tool.set_radius(2)
    drag(window, [(45.5, 20.5), (50.5, 20.5)])
    key(window, Qt.Key.Key_P)
    for x, y in [(90, 5), (115, 5), (115, 30), (90, 30), (90, 5)]:
        click(window, x, y)
    key(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    key(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    project = window.session.project
    assert project.instance(theirs.id) == theirs
    assert project.instance(label_id).area == 600  # the stroke undone
    assert theirs.id in _shown_ids(window)
    # the other program deletes the selected label: a stroke at once, before the next poll, paints
    # a new instance instead of failing on the one that is gone
    window.session.select([label_id])
    with Project.open(path) as other:
        other.delete_instance(label_id)
    key(window, Qt.Key.Key_B)
    drag(window, [(20.5, 50.5), (25.5, 50.5)])
    assert not project.id_in_use("instances", label_id)
    assert window.session.selection != [label_id] and project.instance(window.session.selection[0]).area > 0


def test_an_undo_step_whose_instance_another_program_deleted_or_changed_is_refused_in_one_line(qtbot, window, tmp_path):
    path, label_id = _labelled_project(tmp_path)
    open_and_wait(qtbot, window, path)
    zoom_4x(window)
    key(window, Qt.Key.Key_P)
    for x, y in [(90, 5), (115, 5), (115, 30), (90, 30), (90, 5)]:
        click(window, x, y)
    (drawn,) = window.session.selection
    key(window, Qt.Key.Key_V)
    click(window, 20, 20)
    key(window, Qt.Key.Key_B)
    window.canvas.tool.set_radius(2)
    drag(window, [(45.5, 20.5), (50.5, 20.5)])
    painted = window.session.project.instance(label_id)
    with Project.open(path) as other:
        other.delete_instance(drawn)
        moved = other.update_instance(label_id, category_id=other.add_category("tree").id)
    qtbot.waitUntil(lambda: drawn not in _shown_ids(window), timeout=5000)
    key(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # the stroke: its label was changed since
    assert window.status.currentMessage() == (
        f"{path}: cannot undo 'Brush': another program changed instance {label_id} since"
    )
    key(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # the polygon: deleted since
    assert (
        window.status.currentMessage()
        == f"{path}: cannot undo 'Polygon': another program deleted instance {drawn} since"
    )
    project = window.session.project
    assert project.instance(label_id) == moved and moved.area == painted.area
    assert not project.id_in_use("instances", drawn)
    assert not window.actions_by_name["undo"].isEnabled()  # the refused steps left the history


def test_a_redo_or_a_category_undo_over_another_programs_change_is_refused_and_leaves_the_history(tmp_path):
    path, _ = _labelled_project(tmp_path)
    with Project.open(path) as project, Project.open(path) as other:
        history = UndoStack(project)
        mask = np.zeros((90, 120), dtype=bool)
        mask[5:9, 5:9] = True
        added = history.add(2, 1, mask=mask)
        history.undo()
        other.restore_instance(added)  # the other program put it back under its id
        with pytest.raises(
            EditConflict, match=f"cannot redo 'Add instance': another program added instance {added.id}"
        ):
            history.redo()
        assert not history.can_redo and project.instance(added.id) == added
        unused = project.add_category("unused")
        history.delete_category(unused.id)
        theirs = other.add_category("unused", color="#000000")  # a category of its own, named so
        with pytest.raises(EditConflict, match="cannot undo .* another program changed the categories"):
            history.undo()
        assert not history.can_undo and project.category_by_name("unused") == theirs
        # a step refused for another reason (the project cannot be written now) stays to be tried again
        history.add(2, 1, mask=mask)
        project.read_only = True
        with pytest.raises(ProjectReadOnly):
            history.undo()
        assert history.can_undo


def test_undoing_a_review_state_another_program_changed_since_is_refused_but_this_programs_own_move_is_not(tmp_path):
    path, _ = _labelled_project(tmp_path)
    with Project.open(path) as project, Project.open(path) as other:
        history = UndoStack(project)
        history.set_review_state(2, ReviewState.DONE, "Done")
        other.set_review_state(2, ReviewState.IN_REVIEW)  # someone else reopened it
        with pytest.raises(EditConflict, match="cannot undo 'Done': another program changed the review state"):
            history.undo()
        assert project.image(2).state == ReviewState.IN_REVIEW and not history.can_undo

        before = project.image(3).state
        history.set_review_state(3, ReviewState.PROPOSED, "Propose")
        project.set_review_state(3, ReviewState.IN_REVIEW)  # this program's own move: an edit began the review
        history.undo()
        assert project.image(3).state == before != ReviewState.PROPOSED
