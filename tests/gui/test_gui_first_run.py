"""The first run on a folder asks once which model proposes labels (issue 16, item 5): the demo
model with what it knows, COCO weights with where to put the file offline, a local file, or none."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPoint, QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QDialogButtonBox, QLabel

from annotator.gui.first_run import COCO_WEIGHTS, OFFERED, FirstRunDialog
from annotator.gui.proposals import ModelKind
from model.weights.download import cache_dir
from model.weights.registry import REGISTRY
from resources import bundled_model
from tests.gui.driving import make_window, open_and_wait, write_blob_images


def first_use_settings(tmp_path: Path) -> QSettings:
    """Settings of a person who has never chosen a model (the ``settings`` fixture has answered)."""
    return QSettings(str(tmp_path / "first-use.ini"), QSettings.Format.IniFormat)


def the_question(qtbot, window) -> FirstRunDialog:
    qtbot.waitUntil(lambda: window.first_run.dialog is not None and window.first_run.dialog.isVisible(), timeout=5000)
    return window.first_run.dialog


def click(widget) -> None:
    """A click on a button's left end: a radio button takes clicks on its circle and text only."""
    QTest.mouseClick(widget, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(8, widget.height() // 2))


def test_the_first_folder_asks_which_model_once_and_the_demo_answer_loads_it(qtbot, tmp_path):
    settings = first_use_settings(tmp_path)
    photos = tmp_path / "photos"
    write_blob_images(photos)
    window = make_window(qtbot, settings)
    open_and_wait(qtbot, window, photos)
    dialog = the_question(qtbot, window)
    texts = " ".join(label.text() for label in dialog.findChildren(QLabel))
    assert "synthetic shapes only" in texts and "star" in texts  # what the demo model knows
    coco = REGISTRY[COCO_WEIGHTS]  # offline: which file to fetch, and where to put it by hand
    assert f"fetch {coco.url} on another machine and place it at {cache_dir() / coco.filename}" in texts
    click(dialog.demo)
    click(dialog.buttons.button(QDialogButtonBox.StandardButton.Ok))
    qtbot.waitUntil(lambda: window.proposals.has_model and not window.proposals.busy, timeout=10000)
    assert settings.value("model/name") == str(bundled_model()) and settings.value(OFFERED, type=bool)
    assert window.first_run.dialog is None
    window.close()

    again = make_window(qtbot, settings)  # the answer is kept: no question at the next opening
    open_and_wait(qtbot, again, photos)
    qtbot.wait(100)
    assert again.first_run.dialog is None
    again.close()


def test_no_model_as_the_first_answer_is_said_kept_and_not_asked_again(qtbot, tmp_path, blob_project):
    settings = first_use_settings(tmp_path)
    window = make_window(qtbot, settings)
    open_and_wait(qtbot, window, blob_project)
    dialog = the_question(qtbot, window)
    click(dialog.none)
    click(dialog.buttons.button(QDialogButtonBox.StandardButton.Ok))
    qtbot.waitUntil(lambda: window.first_run.dialog is None, timeout=5000)
    assert window.status.currentMessage().startswith("No model: label by hand")
    assert not window.proposals.has_model and settings.value(OFFERED, type=bool)
    assert settings.value("model/kind") is None
    open_and_wait(qtbot, window, blob_project)  # opened again: asked once only
    qtbot.wait(100)
    assert window.first_run.dialog is None
    window.close()


def test_a_local_weights_file_is_an_answer_once_a_file_is_chosen(qtbot, tmp_path, blob_project):
    weights = tmp_path / "mine.safetensors"
    weights.write_bytes(b"the blob predictor's factory ignores the file")
    window = make_window(qtbot, first_use_settings(tmp_path))
    open_and_wait(qtbot, window, blob_project)
    dialog = the_question(qtbot, window)
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    click(dialog.file)
    assert not ok.isEnabled()  # no file yet
    dialog.set_weights_file(str(weights))  # what "Choose the file…" does with the file picked
    assert ok.isEnabled()
    click(ok)
    qtbot.waitUntil(lambda: window.proposals.has_model and not window.proposals.busy, timeout=10000)
    assert window.model_control.settings.value("model/kind") == ModelKind.FILE
    assert window.model_control.settings.value("model/name") == str(weights)
    window.close()


def test_coco_weights_already_on_this_computer_are_the_first_answer_offered(qtbot, tmp_path, blob_project, hub):
    coco = REGISTRY[COCO_WEIGHTS]
    hub.mkdir(parents=True)
    (hub / coco.filename).write_bytes(b"fetched by hand")  # $TORCH_HOME of this test (the hub fixture)
    window = make_window(qtbot, first_use_settings(tmp_path))
    open_and_wait(qtbot, window, blob_project)
    dialog = the_question(qtbot, window)
    texts = " ".join(label.text() for label in dialog.findChildren(QLabel))
    assert dialog.coco.isChecked() and f"Already on this computer ({hub / coco.filename})" in texts
    assert dialog.choice().name == COCO_WEIGHTS
    dialog.reject()
    window.close()
