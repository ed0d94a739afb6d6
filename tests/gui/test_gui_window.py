"""The window as a whole: opening a folder or a project, recent projects and settings, the review
filter, the shortcut help, import and export with clear errors, reopening after a crash, and
auto-propose on opening an image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from PySide6.QtCore import QPoint, QSettings, Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QMessageBox

from annotator.gui.help_dialog import HelpDialog, shortcut_rows
from annotator.gui.proposals import ModelChoice, ModelKind
from annotator.store import Project, ReviewState, Source
from tests.gui.driving import (
    BlobPredictor,
    answer_dialogs,
    key,
    load_model,
    make_window,
    open_and_wait,
    wait_for_image,
    write_blob_images,
)


def test_opening_a_folder_creates_its_project_and_remembers_it(qtbot, window, tmp_path, settings):
    folder = tmp_path / "pets"
    write_blob_images(folder, 4)
    (folder / "notes.txt").write_text("not an image")
    open_and_wait(qtbot, window, folder)
    assert window.session.project.path == folder / "pets.annot"
    assert [r.file_name for r in window.session.project.images()] == ["00.png", "01.png", "02.png", "03.png"]
    assert window.images.model.rowCount() == 4
    assert window.recent_projects() == [str((folder / "pets.annot").resolve())]
    assert window.status.image_size.text() == "120 × 90"
    # thumbnails arrive from the thread pool
    qtbot.waitUntil(lambda: window.images.thumbnails.get(1, folder / "00.png") is not None, timeout=5000)
    window.close()

    again = make_window(qtbot, settings)  # the same settings: geometry and recent projects persist
    assert again.recent_projects() == [str((folder / "pets.annot").resolve())]
    assert again.recent_menu.actions()[0].text().endswith("pets.annot")
    again.recent_menu.actions()[0].trigger()
    qtbot.waitUntil(lambda: again.image_ready, timeout=10000)
    assert again.session.project.image_count() == 4  # opened, not created again
    again.close()


def test_a_recent_project_that_has_gone_leaves_the_menu_with_a_clear_message(qtbot, settings, blob_project, tmp_path):
    window = make_window(qtbot, settings)
    open_and_wait(qtbot, window, blob_project)
    gone = tmp_path / "gone.annot"
    window.settings.setValue("recent/projects", [str(gone), str(blob_project.resolve())])
    window.recent.rebuild_menu()
    warnings = answer_dialogs(qtbot, [lambda box: box.accept()])
    window.recent_menu.actions()[0].trigger()
    assert warnings == [f"{gone}: not there any more; removed from the recent projects"]
    assert window.status.currentMessage() == warnings[0]
    assert window.recent_projects() == [str(blob_project.resolve())]
    assert [a.text() for a in window.recent_menu.actions()] == [str(blob_project.resolve())]
    assert window.session.project.path == blob_project  # the open project stays
    window.close()


def test_review_filter_and_image_navigation_keys(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    first = window.session.image_id
    key(window, Qt.Key.Key_D)
    wait_for_image(qtbot, window, first + 1)
    key(window, Qt.Key.Key_A)
    wait_for_image(qtbot, window, first)
    key(window, Qt.Key.Key_Space)  # done, next unlabeled
    wait_for_image(qtbot, window, first + 1)
    window.images.set_filter(ReviewState.DONE)
    assert window.images.visible_ids() == [first]
    assert window.images.filter.currentText() == "Done (1)"
    window.images.set_filter(ReviewState.UNLABELED)
    assert window.images.visible_ids() == [first + 1, first + 2]
    window.images.view.setCurrentIndex(window.images.model.index(1))
    wait_for_image(qtbot, window, first + 2)


def test_the_image_list_highlights_only_the_image_in_view(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    first = window.session.image_id
    qtbot.wait(50)
    key(window, Qt.Key.Key_D)
    wait_for_image(qtbot, window, first + 1)
    qtbot.wait(50)
    # what is on screen (the window's backing store), not a fresh render of the list
    shot = window.screen().grabWindow(window.winId()).toImage()
    view = window.images.view
    highlight = view.palette().color(QPalette.ColorRole.Highlight).name()

    def painted(row: int) -> str:
        rect = view.visualRect(view.model().index(row))
        return shot.pixelColor(view.viewport().mapTo(window, QPoint(rect.right() - 4, rect.center().y()))).name()

    assert [painted(row) == highlight for row in range(3)] == [False, True, False]


def test_a_project_whose_images_moved_is_pointed_at_their_new_folder(qtbot, window, blob_project, tmp_path):
    moved = tmp_path / "elsewhere" / "pictures"
    moved.parent.mkdir()
    (tmp_path / "images").rename(moved)

    def choose_folder(dialog) -> None:
        dialog.setDirectory(str(moved))
        dialog.accept()

    texts = answer_dialogs(qtbot, [lambda box: box.button(QMessageBox.StandardButton.Yes).click(), choose_folder])
    open_and_wait(qtbot, window, blob_project)
    assert texts[0].startswith(f"The images of blobs.annot are not in {tmp_path / 'images'} any more.")
    assert window.status.image_size.text() == "120 × 90"  # the first image was read from the new place
    with Project.open(blob_project) as reopened:  # stored, relative to the project file
        assert reopened.image_root == moved


def test_a_folder_without_the_projects_images_changes_nothing(qtbot, window, blob_project, tmp_path):
    (tmp_path / "images").rename(tmp_path / "gone")
    (tmp_path / "empty").mkdir()

    def choose_folder(dialog) -> None:
        dialog.setDirectory(str(tmp_path / "empty"))
        dialog.accept()

    texts = answer_dialogs(
        qtbot,
        [
            lambda box: box.button(QMessageBox.StandardButton.Yes).click(),
            choose_folder,
            lambda box: box.accept(),
            lambda box: box.accept(),
        ],
    )
    window.open_path(blob_project)
    qtbot.waitUntil(lambda: len(texts) == 3, timeout=5000)
    assert texts[1].endswith("does not hold 00.png; the project is unchanged")
    # the first image cannot be read from the old place: the canvas says so instead of "Open a folder"
    qtbot.waitUntil(lambda: window.canvas.placeholder.startswith("This image cannot be shown."), timeout=5000)
    assert window.canvas.placeholder.endswith(f"{tmp_path / 'images' / '00.png'}: image file not found")
    assert texts[2].endswith(f"{tmp_path / 'images' / '00.png'}: image file not found")
    with Project.open(blob_project) as reopened:
        assert reopened.image_root == tmp_path / "images"


def test_help_lists_the_documented_shortcuts(qtbot, window):
    rows = dict((text, keys) for keys, text in shortcut_rows(list(window.actions_by_name.values())))
    for text, keys in [
        ("Previous image", "A"),
        ("Next image", "D"),
        ("Undo", "Ctrl+Z"),
        ("Brush", "B"),
        ("Eraser", "E"),
        ("Polygon", "P"),
        ("Box to mask", "R"),
        ("Keypoints", "K"),
        ("Fit image", "F"),
        ("Brush bigger", "+"),
        ("Brush smaller", "-"),
        ("Mark done and go to the next unlabeled image", "Space"),
        ("Accept selected proposals", "Return"),
        ("Delete / reject selected", "Del"),
    ]:
        assert rows[text].startswith(keys), (text, rows[text])
    assert "Ctrl+Shift+Z" in rows["Redo"]
    dialog = HelpDialog(list(window.actions_by_name.values()), window)
    qtbot.addWidget(dialog)
    assert dialog.table.rowCount() >= 20


def test_export_writes_coco_and_a_bad_import_leaves_the_project_unchanged(qtbot, window, blob_project, tmp_path):
    open_and_wait(qtbot, window, blob_project)
    import numpy as np

    mask = np.zeros((90, 120), dtype=bool)
    mask[5:15, 5:25] = True
    window.session.history.add(window.session.image_id, 1, mask=mask)
    window.session.project.add_instance(window.session.image_id, 1, mask=mask, score=0.9, source=Source.MODEL)
    out = tmp_path / "out" / "labels.json"
    counts = window.export_to(out)
    data = json.loads(out.read_text())
    assert counts["annotations"] == 1 and data["annotations"][0]["area"] == 200
    assert window.status.currentMessage().endswith("; 1 proposal was left out (nobody accepted it)")
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [}')
    before = window.session.project.instance_count()
    warnings = answer_dialogs(qtbot, [lambda box: box.accept()])
    window._import(bad)
    assert "bad.json" in warnings[0] and "not valid JSON" in warnings[0]
    assert "unchanged" in warnings[0]
    assert window.session.project.instance_count() == before


def test_auto_propose_runs_the_model_on_opening_an_unlabeled_image_and_is_remembered(qtbot, blob_project, settings):
    window = make_window(qtbot, settings)
    try:
        auto = window.actions_by_name["auto_propose"]
        assert auto.isCheckable() and not auto.isChecked()  # off by default
        model_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Model")
        assert auto in model_menu.actions()
        open_and_wait(qtbot, window, blob_project)
        load_model(qtbot, window)
        project = window.session.project
        first = window.session.image_id
        assert window.predictor.calls == 0 and project.instances(first) == []  # off: nothing ran

        project.set_review_state(first + 1, ReviewState.DONE)
        auto.trigger()  # on: the image in view is unlabeled, so it is proposed at once
        qtbot.waitUntil(lambda: project.image(first).state == ReviewState.PROPOSED, timeout=10000)
        assert [(i.source, i.model_version) for i in project.instances(first)] == [(Source.MODEL, "blob-net@test")] * 2

        key(window, Qt.Key.Key_D)  # done: opened, not proposed
        wait_for_image(qtbot, window, first + 1)
        key(window, Qt.Key.Key_D)  # unlabeled: proposed
        wait_for_image(qtbot, window, first + 2)
        qtbot.waitUntil(lambda: project.image(first + 2).state == ReviewState.PROPOSED, timeout=10000)
        key(window, Qt.Key.Key_A)
        wait_for_image(qtbot, window, first + 1)
        qtbot.wait(100)
        assert not window.proposals.busy
        assert window.predictor.calls == 2
        assert project.image(first + 1).state == ReviewState.DONE and project.instances(first + 1) == []
    finally:
        window.close()
    again = make_window(qtbot, settings)  # the setting persists
    assert again.actions_by_name["auto_propose"].isChecked()
    again.close()


def test_auto_propose_skips_images_left_before_their_turn_and_runs_one_job_at_a_time(qtbot, blob_project, settings):
    window = make_window(qtbot, settings, BlobPredictor(delay=0.5))
    try:
        open_and_wait(qtbot, window, blob_project)
        load_model(qtbot, window)
        project = window.session.project
        first = window.session.image_id
        requests, propose = [], window.proposals.propose
        window.proposals.propose = lambda ids: requests.append(list(ids)) or propose(ids)
        window.actions_by_name["auto_propose"].trigger()  # the first image's job starts
        key(window, Qt.Key.Key_D)  # and the user moves on at once, twice
        key(window, Qt.Key.Key_D)
        qtbot.waitUntil(lambda: project.image(first + 2).state == ReviewState.PROPOSED, timeout=10000)
        qtbot.waitUntil(lambda: not window.proposals.busy, timeout=10000)
        assert requests == [[first], [first + 2]]  # one job at a time, the passed-over image skipped
        assert window.predictor.calls == 2
        for image_id in (first, first + 1):  # the first image's job was cancelled once it had started
            assert project.image(image_id).state == ReviewState.UNLABELED and project.instances(image_id) == []
        assert len(project.instances(first + 2)) == 2
    finally:
        window.close()


CRASHING_SESSION = textwrap.dedent("""
    import os, signal, sys
    from PySide6.QtCore import QPointF, QSettings, Qt
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication
    from annotator.gui.main_window import MainWindow
    app = QApplication([])
    settings = QSettings(sys.argv[2], QSettings.Format.IniFormat)
    settings.setValue("model/first_run_offered", True)  # the model question answered (annotator.gui.first_run)
    window = MainWindow(settings=settings)
    window.resize(900, 600)
    window.show()
    window.open_path(__import__("pathlib").Path(sys.argv[1]))
    while not window.image_ready:
        app.processEvents()
    window.canvas.set_view(4.0, QPointF(0, 0))
    def at(x, y):
        return window.canvas.image_to_widget(QPointF(x, y)).toPoint()
    QTest.keyClick(window.canvas, Qt.Key.Key_P)
    for x, y in [(10, 10), (50, 10), (50, 30), (10, 30), (10, 10)]:
        QTest.mouseClick(window.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(x, y))
    QTest.keyClick(window.canvas, Qt.Key.Key_B)
    window.canvas.tool.set_radius(2)
    QTest.mousePress(window.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(80.5, 60.5))
    QTest.mouseMove(window.canvas, at(90.5, 60.5))
    QTest.mouseRelease(window.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(90.5, 60.5))
    QTest.keyClick(window.canvas, Qt.Key.Key_Space)
    print("edited", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no clean-up: a crash
""")


def test_reopening_after_a_crash_loses_no_edit(qtbot, blob_project, tmp_path, settings):
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", CRASHING_SESSION, str(blob_project), str(tmp_path / "s.ini")],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(repo), "QT_QPA_PLATFORM": "offscreen"},
    )
    assert "edited" in result.stdout, result.stderr
    assert result.returncode == -9
    with Project.open(blob_project) as project:
        assert project.integrity_check() == "ok"
        (instance,) = project.instances(1)  # the polygon, then the brush stroke added to it (selected)
        mask = instance.mask
        assert mask[10:30, 10:50].all() and mask[60, 85] and instance.area > 800
        assert project.image(1).state == ReviewState.DONE
    window = make_window(qtbot, settings)
    open_and_wait(qtbot, window, blob_project)
    assert len(window.canvas.instances) == 1
    window.close()


RUN_APP = textwrap.dedent("""
    import sys
    from pathlib import Path
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication
    from annotator.gui.app import run_app
    from annotator.gui.main_window import MainWindow, app_settings
    app = QApplication(sys.argv[:1])  # run_app takes it over; timers need it before exec
    app_settings().setValue("model/first_run_offered", True)  # the model question answered (annotator.gui.first_run)
    def look(tries=[0]):
        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        tries[0] += 1
        if windows and not windows[0].image_ready and tries[0] < 400:
            QTimer.singleShot(50, look)
            return
        for window in windows:
            print("window", window.session.project.image_count(), window.image_ready, window.windowTitle(),
                  flush=True)
            window.close()  # the last window closed ends app.exec()
    QTimer.singleShot(0, look)
    print("exit", run_app(Path(sys.argv[1])), flush=True)
""")


def test_run_app_opens_the_annotation_window_on_a_project(blob_project, tmp_path):
    # In a process of its own: app.exec() in the test process would leave a second quit request
    # (the last window closing posts one) to be delivered after exec returns, which stops every
    # later event loop of the test session at once.
    repo = Path(__file__).resolve().parents[2]
    config = tmp_path / "config"  # QSettings' native store on Linux: not the user's own
    result = subprocess.run(
        [sys.executable, "-c", RUN_APP, str(blob_project)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(repo), "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(config)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["window 3 True blobs.annot — Mask R-CNN annotator", "exit 0"], result.stderr
    saved = QSettings(str(config / "maskrcnn-annotator" / "annotator.conf"), QSettings.Format.IniFormat)
    assert saved.value("recent/projects") == str(blob_project.resolve())


def test_the_model_that_loaded_last_is_loaded_again_at_the_next_start(qtbot, window, settings, tmp_path):
    weights = tmp_path / "mine.safetensors"
    weights.write_bytes(b"the blob predictor's factory ignores the file; the window checks it exists")
    assert not window.restore_model()  # nothing loaded yet: nothing to restore
    window.load_model(ModelChoice(ModelKind.FILE, str(weights)), "cpu")
    qtbot.waitUntil(lambda: window.proposals.has_model and not window.proposals.busy, timeout=10000)
    window.close()

    again = make_window(qtbot, settings)
    assert again.restore_model()
    qtbot.waitUntil(lambda: again.proposals.has_model, timeout=10000)
    assert settings.value("model/name") == str(weights) and settings.value("model/device") == "cpu"
    again.close()

    weights.unlink()  # a file that has gone is not offered to the loader
    third = make_window(qtbot, settings)
    assert not third.restore_model() and not third.proposals.has_model
