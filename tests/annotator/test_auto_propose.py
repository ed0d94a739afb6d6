"""Auto-propose's decisions without a window or a model thread: which image is proposed when, one
job at a time, and which job is cancelled when the person moves on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from annotator.auto_propose import AutoPropose
from annotator.store import Project, ReviewState


@pytest.fixture
def project(tmp_path: Path) -> Project:
    project = Project.create(tmp_path / "auto.annot", tmp_path)
    for name in ("a.png", "b.png", "c.png"):
        project.add_image(name, 20, 10, "hash-" + name)
    project.add_category("cell")
    yield project
    project.close()


def test_an_unlabeled_image_without_instances_is_proposed_once_each_time_it_is_opened(project: Project) -> None:
    auto = AutoPropose(enabled=True)
    assert not auto.image_opened(1)
    assert auto.wants(project, 1, model_free=True)
    auto.submitted(1)
    assert not auto.wants(project, 1, model_free=True)  # once per opening, even if the job left it unlabeled
    auto.job_finished()
    assert not auto.wants(project, 1, model_free=True)
    auto.image_opened(1)
    assert auto.wants(project, 1, model_free=True)


def test_nothing_is_proposed_when_off_busy_or_for_an_image_with_instances_or_reviewed(project: Project) -> None:
    auto = AutoPropose(enabled=False)
    assert not auto.wants(project, 1, model_free=True)
    auto.set_enabled(True)
    assert not auto.wants(project, 1, model_free=False)  # no model, or the model is busy: one job at a time
    assert not auto.wants(None, 1, model_free=True) and not auto.wants(project, 0, model_free=True)
    project.add_instance(1, 1, mask=np.ones((10, 20), dtype=bool))
    project.set_review_state(2, ReviewState.PROPOSED)
    assert [auto.wants(project, i, model_free=True) for i in (1, 2, 3)] == [False, False, True]


def test_turning_it_on_proposes_the_image_in_view_even_when_it_ran_there_before(project: Project) -> None:
    auto = AutoPropose(enabled=True)
    auto.submitted(1)
    auto.job_finished()
    auto.set_enabled(False)
    auto.set_enabled(True)
    assert auto.wants(project, 1, model_free=True)


def test_a_started_job_for_an_image_the_person_left_is_cancelled(project: Project) -> None:
    auto = AutoPropose(enabled=True)
    auto.submitted(1)
    assert not auto.job_progressed(image_in_view=1)  # started, for the image in view
    assert not auto.image_opened(1)  # opened again: still the image it runs for
    assert auto.image_opened(2)  # left: cancel it, the image now open comes next
    auto.job_finished()
    assert auto.wants(project, 2, model_free=True)


def test_a_job_left_before_it_started_is_cancelled_at_its_first_progress_report(project: Project) -> None:
    auto = AutoPropose(enabled=True)
    auto.submitted(1)
    assert not auto.image_opened(2)  # a cancel now would be lost: the model thread has not started it
    assert not auto.image_opened(3)
    assert auto.job_progressed(image_in_view=3)  # it starts: now cancel it
    assert not auto.job_progressed(image_in_view=3)  # once
    auto.job_finished()
    assert auto.wants(project, 3, model_free=True) and not auto.job_progressed(image_in_view=3)


def test_the_persons_cancel_stops_auto_propose_until_the_image_is_opened_again(project: Project) -> None:
    auto = AutoPropose(enabled=True)
    auto.image_opened(1)
    auto.cancelled_by_user()
    assert not auto.wants(project, 1, model_free=True)
    auto.image_opened(2)
    assert auto.wants(project, 2, model_free=True)


def test_opening_another_project_cancels_only_a_job_that_started(project: Project) -> None:
    auto = AutoPropose(enabled=True)
    auto.submitted(1)
    assert not auto.project_closed()  # not started: nothing to cancel, and its first report is no longer ours
    assert not auto.job_progressed(image_in_view=5)
    auto.submitted(1)
    auto.job_progressed(image_in_view=1)
    assert auto.project_closed()
    assert not auto.image_opened(1)  # forgotten: opening an image of the new project cancels nothing
