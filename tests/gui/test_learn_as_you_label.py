"""Learn as I label in the window, with the real Predictor and the real training: images marked
done through real key presses start a round in the background, the new model is recorded, used and
re-proposes the untouched images, and the event loop never stalls; a failed round changes nothing."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QElapsedTimer, Qt, QTimer

from annotator.gui.main_window import MainWindow
from annotator.gui.proposals import ModelChoice, ModelKind
from annotator.learning import RoundSettings
from annotator.store import Project, ReviewState
from resources import bundled_model
from tests.gui.driving import IMAGE_SIZE, key, open_and_wait, wait_for_image, write_blob_images


@pytest.fixture
def labelled_project(tmp_path: Path) -> Path:
    """Four blob images with real content hashes (the held-out split reads them), a label each."""
    folder = tmp_path / "images"
    names = write_blob_images(folder, count=4)
    path = tmp_path / "learn.annot"
    with Project.create(path, folder) as project:
        category = project.add_category("ellipse")
        for name in names:
            image = project.add_image(name, *IMAGE_SIZE, hashlib.sha256((folder / name).read_bytes()).hexdigest())
            mask = np.zeros(IMAGE_SIZE[::-1], dtype=bool)
            mask[12:32, 10:40] = True
            project.add_instance(image.id, category.id, mask=mask)
    return path


class StallMeter:
    """The longest gap between the ticks of a 5 ms timer: how long the event loop was held up."""

    def __init__(self) -> None:
        self.clock = QElapsedTimer()
        self.clock.start()
        self.last = 0
        self.longest = 0
        self.timer = QTimer(interval=5, timeout=self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now = self.clock.elapsed()
        self.longest = max(self.longest, now - self.last)
        self.last = now


def learning_window(qtbot, settings, project: Path, weights: Path, held_out: float = 0.0) -> MainWindow:
    """A window on ``project`` learning as it labels, from ``weights``: rounds of 2 images, 2 steps
    each, ``held_out`` of the done images held out (none: the new model is used untested)."""
    window = MainWindow(settings=settings)  # the real Predictor, in the model thread
    qtbot.addWidget(window)
    window.resize(1000, 700)
    window.show()
    open_and_wait(qtbot, window, project)
    window.learning.round_settings = RoundSettings(iterations=2, device="cpu", threads=1, held_out_fraction=held_out)
    window.learning.set_round_size(2)
    window.actions_by_name["learn"].setChecked(True)
    window.load_model(ModelChoice(ModelKind.FILE, str(weights), "demo"), "cpu")
    qtbot.waitUntil(lambda: window.proposals.has_model and not window.proposals.busy, timeout=60000)
    return window


def test_two_images_marked_done_train_swap_the_model_and_repropose_while_the_ui_stays_responsive(
    qtbot, settings, labelled_project, tmp_path
):
    weights = tmp_path / "demo.safetensors"
    shutil.copy(bundled_model(), weights)
    window = learning_window(qtbot, settings, labelled_project, weights)
    project = window.session.project
    (start,) = project.model_history()
    assert start.base is None and project.model_in_use == start.version
    meter = StallMeter()
    first = window.session.image_id
    key(window, Qt.Key.Key_Space)
    wait_for_image(qtbot, window, first + 1)
    meter.longest = 0  # the image load before is not the round's doing
    said = []  # what the status bar is told of the round as it runs
    window.learning.progressed.connect(said.append)
    key(window, Qt.Key.Key_Space)  # the second image marked done: a round starts
    assert window.learning.running and window.status.learning.isVisible()
    qtbot.waitUntil(lambda: len(project.model_history()) == 2, timeout=120000)
    produced = project.model_history()[1]
    assert produced.base == start.version and produced.trained_on >= 1
    assert "Learning: step 2 of 2, under a minute left" in said and not window.status.learning.isVisible()
    assert said[-1] == "Learning: the new model is trained"
    assert (Path(labelled_project).parent / produced.weights).is_file()  # beside the project
    assert window.learning.last_result.reason.startswith("too few held-out images to compare (0)")
    qtbot.waitUntil(lambda: project.model_in_use == produced.version, timeout=60000)
    assert window.proposals.model_version == produced.version  # proposals come from the new model
    # the two untouched images are proposed again, by the new model
    untouched = [i.id for i in project.iter_images(states=[ReviewState.UNLABELED, ReviewState.PROPOSED])]
    assert len(untouched) == 2
    qtbot.waitUntil(lambda: not window.proposals.busy, timeout=60000)
    proposals = [i for image_id in untouched for i in project.instances(image_id) if i.source.value == "model"]
    assert proposals and all(p.model_version == produced.version for p in proposals)
    meter.timer.stop()
    assert meter.longest < 50, f"the event loop stalled {meter.longest} ms"
    window.close()
    assert not window.learning.running


def test_a_failed_round_says_why_and_changes_nothing(qtbot, settings, labelled_project, tmp_path):
    weights = tmp_path / "demo.safetensors"
    shutil.copy(bundled_model(), weights)
    window = learning_window(qtbot, settings, labelled_project, weights)
    project = window.session.project
    history, in_use = project.model_history(), project.model_in_use
    weights.unlink()  # the round's training cannot start from it
    first = window.session.image_id
    key(window, Qt.Key.Key_Space)
    wait_for_image(qtbot, window, first + 1)
    key(window, Qt.Key.Key_Space)
    started = time.monotonic()
    qtbot.waitUntil(lambda: window.status.currentMessage().startswith("Learning round failed"), timeout=120000)
    assert "nothing changed" in window.status.currentMessage() and time.monotonic() - started < 120
    assert project.model_history() == history and project.model_in_use == in_use
    assert window.proposals.has_model  # the model in use stays loaded
    window.close()


def test_a_round_that_ends_while_the_model_is_proposing_switches_once_the_proposals_are_done(
    qtbot, settings, labelled_project, tmp_path
):
    weights = tmp_path / "demo.safetensors"
    shutil.copy(bundled_model(), weights)
    window = learning_window(qtbot, settings, labelled_project, weights)
    project = window.session.project

    def keep_proposing(busy: bool) -> None:  # a person proposing image after image while the round trains
        if not busy and len(project.model_history()) < 2:
            window.model_control.propose_current()

    window.proposals.busy_changed.connect(keep_proposing)
    busy_at_the_end = []
    window.learning.finished.connect(lambda *_: busy_at_the_end.append(window.proposals.busy))
    first = window.session.image_id
    key(window, Qt.Key.Key_Space)
    wait_for_image(qtbot, window, first + 1)
    keep_proposing(False)
    key(window, Qt.Key.Key_Space)  # the round starts
    qtbot.waitUntil(lambda: len(project.model_history()) == 2, timeout=120000)
    assert busy_at_the_end == [True]  # the model thread was proposing as the round ended
    produced = project.model_history()[1]
    qtbot.waitUntil(lambda: window.proposals.model_version == produced.version, timeout=60000)
    assert project.model_in_use == produced.version
    untouched = [i.id for i in project.iter_images(states=[ReviewState.UNLABELED, ReviewState.PROPOSED])]
    qtbot.waitUntil(
        lambda: (
            not window.proposals.busy
            and all(
                i.model_version == produced.version
                for image_id in untouched
                for i in project.instances(image_id)
                if i.source.value == "model"
            )
        ),
        timeout=60000,
    )
    window.close()


def test_reopening_a_project_proposes_with_its_own_model_and_a_new_one_records_the_model_loaded(
    qtbot, settings, labelled_project, tmp_path
):
    from annotator.model_history import file_version, record_start, runs_dir

    learned = runs_dir(labelled_project) / "round-001" / "model_final.safetensors"
    learned.parent.mkdir(parents=True)
    shutil.copy(bundled_model(), learned)
    with Project.open(labelled_project) as project:
        record_start(project, file_version(learned), str(learned))  # what a round left in use
    other = tmp_path / "other.safetensors"
    shutil.copy(bundled_model(), other)
    window = MainWindow(settings=settings)
    qtbot.addWidget(window)
    window.load_model(ModelChoice(ModelKind.FILE, str(other), "other"), "cpu")  # the model of the last session
    open_and_wait(qtbot, window, labelled_project)  # opened while that one still loads
    qtbot.waitUntil(lambda: window.proposals.model_version == file_version(learned), timeout=60000)
    qtbot.waitUntil(lambda: not window.proposals.busy, timeout=60000)
    project = window.session.project
    assert [r.version for r in project.model_history()] == [file_version(learned)]  # no record of the other
    assert project.model_in_use == file_version(learned)
    fresh = tmp_path / "fresh.annot"
    Project.create(fresh, tmp_path / "images").close()
    window.open_path(fresh)  # a project without a history: the model loaded is its starting model
    (start,) = window.session.project.model_history()
    assert start.version == file_version(learned) and window.session.project.model_in_use == start.version
    window.close()
