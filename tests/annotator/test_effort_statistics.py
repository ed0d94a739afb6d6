"""Effort from real use, without a window: the facts the store records (edits per label, active
seconds, when an image was marked done), how a label's origin is read, the statistics per model and
over time, and ``main.py info --effort``."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from annotator.commands import UndoStack
from annotator.effort import (
    NO_MODEL,
    ActiveTime,
    LabelOrigin,
    effort_by_model,
    effort_over_time,
    effort_report,
    label_origin,
)
from annotator.review import Review, ViewState
from annotator.schema import MIGRATIONS
from annotator.store import Project, ReviewState, Source

HEIGHT, WIDTH = 30, 40
MAIN_PY = Path(__file__).resolve().parents[2] / "main.py"


@pytest.fixture
def project(tmp_path: Path) -> Project:
    project = Project.create(tmp_path / "effort.annot", tmp_path)
    for name in ("a.png", "b.png", "c.png"):
        project.add_image(name, WIDTH, HEIGHT, "hash-" + name)
    project.add_category("cell")
    project.add_category("dot")
    yield project
    project.close()


def square(x: int, side: int = 4) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[0:side, x : x + side] = True
    return mask


def propose(project: Project, image_id: int, x: int, score: float = 0.9, version: str = "m1") -> int:
    added = project.add_instance(image_id, 1, mask=square(x), score=score, source=Source.MODEL, model_version=version)
    return added.id


def test_active_time_counts_the_gaps_between_inputs_up_to_a_minute() -> None:
    clock = ActiveTime(idle_limit=60)
    assert clock.input(100.0) == 0  # the first input starts the count
    assert clock.input(105.0) == 5
    assert clock.input(200.0) == 0  # a pause of 95 s is not work
    assert clock.input(230.0) == 30
    clock.pause()  # focus lost: the time until the next input is not counted
    assert clock.input(235.0) == 0
    assert clock.input(236.5) == 1.5


def test_an_edit_counts_once_and_accepting_does_not(project: Project) -> None:
    history = UndoStack(project)
    proposal = propose(project, 1, 0)
    history.accept([proposal])
    assert project.instance(proposal).edits == 0
    history.set_mask(proposal, square(0, side=6))
    history.set_category([proposal], 2)
    assert project.instance(proposal).edits == 2


def test_undo_takes_an_edit_back_from_the_count(project: Project) -> None:
    history = UndoStack(project)
    proposal = propose(project, 1, 0)
    history.set_mask(proposal, square(0, side=6))
    history.undo()
    assert project.instance(proposal).edits == 0
    history.redo()
    assert project.instance(proposal).edits == 1


def test_marking_done_records_when_and_undo_clears_it(project: Project) -> None:
    history = UndoStack(project)
    Review(history, ViewState()).mark_done(1)
    done_at = project.image(1).done_at
    assert done_at is not None and project.image(2).done_at is None
    history.undo()
    assert project.image(1).done_at is None


def test_active_seconds_add_up_per_image(project: Project) -> None:
    project.add_active_seconds(1, 12.5)
    project.add_active_seconds(1, 2.5)
    project.add_active_seconds(1, -4)  # nothing to take away
    assert project.image(1).active_seconds == 15.0
    assert project.image(2).active_seconds == 0.0


def test_a_label_origin_is_read_off_its_provenance(project: Project) -> None:
    history = UndoStack(project)
    accepted, corrected = propose(project, 1, 0), propose(project, 1, 10)
    history.accept([accepted, corrected])
    history.set_mask(corrected, square(10, side=6))
    boxed = project.add_instance(1, 1, mask=square(20), model_version="m1")  # box to mask: no score
    drawn = project.add_instance(1, 1, mask=square(30))
    assert [label_origin(project.instance(i)) for i in (accepted, corrected, boxed.id, drawn.id)] == [
        LabelOrigin.ACCEPTED,
        LabelOrigin.CORRECTED,
        LabelOrigin.BOX,
        LabelOrigin.DRAWN,
    ]


def test_statistics_per_model_and_over_time_follow_the_order_images_were_marked_done(project: Project) -> None:
    history = UndoStack(project)
    review = Review(history, ViewState())
    # image 2, done first with model m1: two proposals, one corrected with two strokes, 40 s
    first, second = propose(project, 2, 0), propose(project, 2, 10)
    history.set_mask(second, square(10, side=5))
    history.set_mask(second, square(10, side=6))
    project.add_active_seconds(2, 40)
    review.mark_done(2)
    # image 1, done next with model m2: one proposal accepted as is, 10 s
    propose(project, 1, 0, version="m2")
    project.add_active_seconds(1, 10)
    review.mark_done(1)
    # image 3, done last, all drawn by hand, 60 s
    project.add_instance(3, 1, mask=square(0))
    project.add_active_seconds(3, 60)
    review.mark_done(3)

    by_model = effort_by_model(project)
    assert list(by_model) == ["m1", "m2", NO_MODEL]
    m1 = by_model["m1"]
    assert (m1.images, m1.instances, m1.accepted_as_is, m1.corrected, m1.edits_per_instance) == (1, 2, 0.5, 0.5, 1.0)
    assert m1.seconds_per_image == 40
    assert by_model["m2"].accepted_as_is == 1.0 and by_model[NO_MODEL].drawn == 1.0
    over_time = effort_over_time(project, block=2)
    assert [(row.label, row.images, row.instances) for row in over_time] == [("images 1-2", 2, 3), ("images 3-3", 1, 1)]
    assert over_time[0].seconds_per_image == 25 and over_time[1].seconds_per_image == 60
    assert first in {i.id for i in project.instances(2)}


def test_images_not_marked_done_in_the_app_do_not_count(project: Project) -> None:
    project.add_image("imported.png", WIDTH, HEIGHT, "hash-imported", state=ReviewState.DONE)
    assert effort_report(project) == ["effort: no image has been marked done in the app yet"]


def test_a_project_of_the_first_schema_is_upgraded_with_its_labels_kept(tmp_path: Path) -> None:
    path = tmp_path / "old.annot"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO meta VALUES ('image_root', '.')")
    db.execute(
        "INSERT INTO images (file_name, width, height, sha256, state, updated_at) VALUES ('a.png', 4, 4, 'h', 3, 0)"
    )
    db.execute("INSERT INTO categories (id, name, color) VALUES (1, 'cell', '#000000')")
    db.execute(
        "INSERT INTO instances (image_id, category_id, bbox, area, source, created_at, updated_at)"
        " VALUES (1, 1, '[0,0,2,2]', 4, 'human', 0, 0)"
    )
    db.commit()
    db.close()
    with Project.open(path) as project:
        (instance,) = project.instances(1)
        assert (instance.bbox, instance.edits) == ((0, 0, 2, 2), 0)
        assert (project.image(1).active_seconds, project.image(1).done_at) == (0.0, None)
        assert project.model_history() == []


def test_info_effort_prints_the_table_per_model_and_over_time(project: Project) -> None:
    propose(project, 1, 0)
    project.add_active_seconds(1, 8)
    Review(UndoStack(project), ViewState()).mark_done(1)
    shown = subprocess.run(
        [sys.executable, str(MAIN_PY), "info", str(project.path), "--effort"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "effort on 1 image marked done in the app" in shown.stdout
    row = next(line for line in lines if line.strip().startswith("m1"))
    assert row.split()[1:] == ["1", "1", "100%", "0%", "0%", "0%", "0.00", "8.0"]


def test_an_image_marked_done_again_keeps_when_it_was_first_marked_done(project: Project) -> None:
    project.set_review_state(1, ReviewState.DONE)
    first = project.image(1).done_at
    project.set_review_state(1, ReviewState.DONE)
    assert project.image(1).done_at == first
    project.set_review_state(1, ReviewState.IN_REVIEW)
    assert project.image(1).done_at is None
