"""The review rules without a window: what is shown, accept, reject, accept all, a category change,
marking an image done and where "done, next" goes, each with its undo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from annotator.commands import UndoStack
from annotator.review import Review, ViewState
from annotator.store import Instance, Project, ReviewState, Source

HEIGHT, WIDTH = 30, 40


@pytest.fixture
def project(tmp_path: Path) -> Project:
    project = Project.create(tmp_path / "review.annot", tmp_path)
    for name in ("a.png", "b.png", "c.png", "d.png"):
        project.add_image(name, WIDTH, HEIGHT, "hash-" + name)
    project.add_category("cell")
    project.add_category("dot")
    yield project
    project.close()


@pytest.fixture
def heard() -> list[int]:
    return []


@pytest.fixture
def review(project: Project, heard: list[int]) -> Review:
    return Review(UndoStack(project), ViewState(), heard.append)


def square(x: int, y: int, side: int = 4) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[y : y + side, x : x + side] = True
    return mask


def proposal(project: Project, score: float | None, x: int = 0, image_id: int = 1) -> Instance:
    return project.add_instance(image_id, 1, mask=square(x, 0), score=score, source=Source.MODEL)


def label(project: Project, x: int = 20, image_id: int = 1) -> Instance:
    return project.add_instance(image_id, 1, mask=square(x, 10))


def sources(project: Project, image_id: int = 1) -> dict[int, Source]:
    return {i.id: i.source for i in project.instances(image_id)}


def test_shown_means_show_checked_and_a_proposal_at_the_threshold_or_selected(project: Project) -> None:
    view = ViewState(score_threshold=0.5)
    weak, at, unscored, kept = proposal(project, 0.4), proposal(project, 0.5), proposal(project, None), label(project)
    assert [view.shows(i) for i in (weak, at, unscored, kept)] == [False, True, True, True]
    assert view.shows(weak, selection=[weak.id])  # the click tool picked it: it stays in view
    view.hidden.update({at.id, kept.id})
    assert not view.shows(at) and not view.shows(kept, selection=[kept.id])
    assert view.passes_threshold(at) and view.passes_threshold(kept)  # hiding is not the threshold
    view.locked.add(unscored.id)
    assert not view.editable(unscored.id) and not view.editable(at.id) and view.editable(weak.id)


def test_accepting_keeps_the_provenance_puts_the_image_in_review_and_undo_takes_it_back(
    project: Project, review: Review, heard: list[int]
) -> None:
    first, locked, other = proposal(project, 0.9), proposal(project, 0.8, x=10), proposal(project, 0.7, x=20)
    review.view.locked.add(locked.id)
    gone = proposal(project, 0.6, x=30)
    project.delete_instance(gone.id)
    assert review.accept(1, [first.id, locked.id, gone.id, other.id]) == [first.id, other.id]
    assert sources(project) == {first.id: Source.HUMAN, locked.id: Source.MODEL, other.id: Source.HUMAN}
    kept = project.instance(first.id)
    assert (kept.score, kept.model_version) == (first.score, first.model_version)
    assert project.image(1).state == ReviewState.IN_REVIEW and heard == [1]
    review.history.undo()
    assert sources(project) == {first.id: Source.MODEL, locked.id: Source.MODEL, other.id: Source.MODEL}
    assert project.image(1).state == ReviewState.IN_REVIEW  # a person has started on it


def test_rejecting_only_proposals_is_a_reject_and_anything_else_a_delete(project: Project, review: Review) -> None:
    a, b, kept = proposal(project, 0.9), proposal(project, 0.3, x=10), label(project)
    assert review.reject(1, [a.id]) == [a.id]
    assert review.history.undo_text == "Reject"
    assert review.reject(1, [b.id, kept.id]) == [b.id, kept.id]
    assert review.history.undo_text == "Delete" and project.instances(1) == []
    review.history.undo()
    assert sorted(sources(project)) == [b.id, kept.id]


def test_accept_all_takes_the_shown_unlocked_proposals_in_one_step(project: Project, review: Review) -> None:
    strong, weak, hidden, locked = (proposal(project, s, x=10 * n) for n, s in enumerate((0.9, 0.2, 0.8, 0.7)))
    kept = label(project)
    review.view.hidden.add(hidden.id)
    review.view.locked.add(locked.id)
    assert review.accept_all_shown(1) == [strong.id]
    assert sources(project) == {
        strong.id: Source.HUMAN,
        weak.id: Source.MODEL,
        hidden.id: Source.MODEL,
        locked.id: Source.MODEL,
        kept.id: Source.HUMAN,
    }
    assert review.history.undo_text == "Accept 1 proposals" and len(review.history) == 1
    assert review.accept_all_shown(1) == [] and len(review.history) == 1  # nothing left: no empty step


def test_marking_done_accepts_what_passes_the_threshold_discards_the_rest_and_undoes_in_three_steps(
    project: Project, review: Review
) -> None:
    project.set_review_state(1, ReviewState.PROPOSED)
    strong, weak = proposal(project, 0.9), proposal(project, 0.3, x=10)
    hidden, locked = proposal(project, 0.8, x=20), proposal(project, 0.1, x=30)
    kept = label(project)
    review.view.hidden.add(hidden.id)  # judged by its score like the others
    review.view.locked.add(locked.id)  # left as it is
    before = sorted(i.id for i in project.instances(1))
    done = review.mark_done(1)
    assert (done.accepted, done.discarded) == ([strong.id, hidden.id], [weak.id])
    assert sources(project) == {
        strong.id: Source.HUMAN,
        hidden.id: Source.HUMAN,
        locked.id: Source.MODEL,
        kept.id: Source.HUMAN,
    }
    assert project.image(1).state == ReviewState.DONE
    for _ in range(3):  # the review state, the accept, the discard
        review.history.undo()
    assert project.image(1).state == ReviewState.PROPOSED
    assert sorted(i.id for i in project.instances(1)) == before
    assert sources(project) == {
        strong.id: Source.MODEL,
        weak.id: Source.MODEL,
        hidden.id: Source.MODEL,
        locked.id: Source.MODEL,
        kept.id: Source.HUMAN,
    }


def test_done_next_goes_to_the_next_unreviewed_image_then_back_to_the_first_then_nowhere(
    project: Project, review: Review
) -> None:
    project.set_review_state(2, ReviewState.IN_REVIEW)
    project.set_review_state(3, ReviewState.PROPOSED)
    assert review.next_to_review(1) == 3  # in review is not "to review"
    assert review.next_to_review(3) == 4
    assert review.next_to_review(4) == 1  # none after it: the first one before
    for image_id in (1, 3, 4):
        review.mark_done(image_id)
    assert review.next_to_review(4) == 0


def test_only_an_unlabeled_or_proposed_image_goes_in_review_on_an_edit(
    project: Project, review: Review, heard: list[int]
) -> None:
    project.set_review_state(2, ReviewState.PROPOSED)
    project.set_review_state(3, ReviewState.DONE)
    assert [review.mark_in_review(i) for i in (1, 2, 3, 0)] == [True, True, False, False]
    assert [project.image(i).state for i in (1, 2, 3)] == [ReviewState.IN_REVIEW] * 2 + [ReviewState.DONE]
    assert heard == [1, 2]


def test_a_category_change_is_one_undo_step_that_skips_instances_already_of_that_category(
    project: Project, review: Review
) -> None:
    a, b, locked = label(project, 0), label(project, 10), label(project, 30)
    already = project.add_instance(1, 2, mask=square(20, 20))
    review.view.locked.add(locked.id)
    assert review.set_category(1, [a.id, b.id, already.id, locked.id], 2) == [a.id, b.id]
    assert {i.id: i.category_id for i in project.instances(1)} == {a.id: 2, b.id: 2, locked.id: 1, already.id: 2}
    assert review.history.undo_text == "Change category" and len(review.history) == 1
    assert project.instance(a.id).rle == a.rle  # only the category changed
    review.history.undo()
    assert {i.id: i.category_id for i in project.instances(1)} == {a.id: 1, b.id: 1, locked.id: 1, already.id: 2}
    review.history.redo()
    assert project.instance(b.id).category_id == 2
    assert review.history.set_category([a.id], 2) == [] and len(review.history) == 1  # no change, no step


def test_marking_done_discards_proposals_that_repeat_a_label_or_a_better_proposal(
    project: Project, review: Review
) -> None:
    best = proposal(project, 0.9, x=0)  # a 4x4 square at (0, 0)
    same_object_other_class = project.add_instance(
        1, 2, mask=square(0, 0), score=0.7, source=Source.MODEL, model_version="m"
    )
    over_a_label = proposal(project, 0.8, x=20)
    drawn = project.add_instance(1, 1, mask=square(20, 0, side=5))  # IoU 16/25 with the proposal
    over_a_box = proposal(project, 0.6, x=30)
    box_only = project.add_instance(1, 1, bbox=(30, 0, 4, 4))
    alone = proposal(project, 0.55, x=10)
    done = review.mark_done(1)
    assert done.accepted == [best.id, alone.id]
    assert sorted(done.duplicates) == sorted([same_object_other_class.id, over_a_label.id, over_a_box.id])
    assert done.summary() == "Done: accepted 2 proposals, discarded 3 duplicates"
    assert sorted(i.id for i in project.instances(1)) == sorted([best.id, drawn.id, box_only.id, alone.id])
    for _ in range(3):  # the review state, the accept, the discard: all of it comes back
        review.history.undo()
    assert len(project.instances(1)) == 7
    assert all(project.instance(i).source == Source.MODEL for i in (best.id, over_a_label.id, over_a_box.id))


def test_proposals_that_touch_without_overlapping_by_half_are_both_kept(project: Project, review: Review) -> None:
    left, right = proposal(project, 0.9, x=0), proposal(project, 0.8, x=2)  # IoU 8/24
    assert review.mark_done(1).accepted == [left.id, right.id]


def test_copying_the_previous_labels_takes_the_nearest_earlier_image_with_labels_as_one_step(
    project: Project, review: Review
) -> None:
    drawn = label(project, x=20, image_id=1)
    keypoint_free = project.add_instance(1, 2, polygons=[[1, 1, 9, 1, 9, 9]])
    proposal(project, 0.9, image_id=1)  # a proposal is not copied
    proposal(project, 0.9, image_id=2)  # image 2 has only a proposal: skipped
    assert review.copy_previous_labels(3) == "Copied 2 labels from a.png"
    copies = project.instances(3)
    assert [(c.category_id, c.rle, c.polygons, c.source) for c in copies] == [
        (drawn.category_id, drawn.rle, None, Source.HUMAN),
        (2, keypoint_free.rle, keypoint_free.polygons, Source.HUMAN),
    ]
    assert project.image(3).state == ReviewState.IN_REVIEW
    review.history.undo()
    assert project.instances(3) == []
    assert review.copy_previous_labels(1) == "No earlier image has labels to copy"


def test_labels_are_not_copied_between_images_of_different_sizes(tmp_path: Path) -> None:
    with Project.create(tmp_path / "sizes.annot", tmp_path) as project:
        project.add_image("small.png", 10, 10, "h1")
        project.add_image("large.png", 20, 10, "h2")
        project.add_category("cell")
        project.add_instance(1, 1, bbox=(1, 1, 3, 3))
        message = Review(UndoStack(project), ViewState()).copy_previous_labels(2)
        assert (
            message
            == "Nothing copied: small.png is 10x10, this image 20x10: labels copy only between images of one size"
        )
        assert project.instances(2) == []
