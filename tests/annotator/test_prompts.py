"""What a model result becomes without a window: proposals for a whole image, a label for a box a
person drew, a proposal for a click; and which detection a box or a click picks, or which box a
click grows where no detection holds it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from annotator import masks
from annotator.commands import UndoStack
from annotator.prompts import (
    GROWN_BOX_SIDES,
    PromptKind,
    ProposalResult,
    detection_at,
    instance_at_click,
    proposals_at_click,
    proposals_for,
    store_result,
)
from annotator.review import Review, ViewState
from annotator.store import Category, Project, ReviewState, Source

HEIGHT, WIDTH = 30, 40


@dataclass
class Detections:
    """The fields of the Predictor's ``Instances`` that proposals are made from."""

    boxes: np.ndarray  # N x 4, x1 y1 x2 y2
    scores: np.ndarray  # N
    label_names: list[str]
    masks: np.ndarray  # N x H x W bool
    keypoints: None = None


def detections(*found: tuple[str, float, tuple[int, int, int, int]]) -> Detections:
    """Detections of rectangular masks: (class name, score, (x, y, w, h)) each."""
    masks = np.zeros((len(found), HEIGHT, WIDTH), dtype=bool)
    for index, (_, _, (x, y, w, h)) in enumerate(found):
        masks[index, y : y + h, x : x + w] = True
    boxes = np.array([[x, y, x + w, y + h] for _, _, (x, y, w, h) in found], dtype=np.float32).reshape(-1, 4)
    return Detections(boxes, np.array([s for _, s, _ in found], dtype=np.float32), [n for n, _, _ in found], masks)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    project = Project.create(tmp_path / "prompts.annot", tmp_path)
    for name in ("a.png", "b.png"):
        project.add_image(name, WIDTH, HEIGHT, "hash-" + name)
    project.add_category("cell")
    yield project
    project.close()


@pytest.fixture
def review(project: Project) -> Review:
    return Review(UndoStack(project), ViewState())


def result(kind: PromptKind, found: Detections, image_id: int = 1, point=None) -> ProposalResult:
    return ProposalResult(image_id, "net@1234abcd", proposals_for(kind, found, point), kind)


def no_category() -> Category:
    raise AssertionError("only a box takes the current category; proposals take the model's classes")


def test_an_image_result_replaces_untouched_proposals_and_repeats_nothing_on_reviewed_images(
    project: Project, review: Review
) -> None:
    found = detections(("blob", 0.9, (0, 0, 5, 5)), ("blob", 0.3, (10, 10, 4, 4)))
    outcome = store_result(review, result(PromptKind.IMAGE, found), no_category, image_in_view=1)
    assert [(i.source, i.score, i.model_version) for i in outcome.added] == [
        (Source.MODEL, pytest.approx(0.9), "net@1234abcd"),
        (Source.MODEL, pytest.approx(0.3), "net@1234abcd"),
    ]
    assert project.category(outcome.added[0].category_id).name == "blob"  # the model's class
    assert outcome.message == "2 proposals" and outcome.select == []
    assert project.image(1).state == ReviewState.PROPOSED and review.history.undo_text == "Propose"
    review.accept(1, [outcome.added[0].id])
    again = store_result(review, result(PromptKind.IMAGE, found), no_category, image_in_view=2)
    # reviewed meanwhile: both repeat what is there (the label, the proposal left), nothing is added
    assert again.added == [] and project.image(1).state == ReviewState.IN_REVIEW
    project.set_review_state(1, ReviewState.PROPOSED)
    again = store_result(review, result(PromptKind.IMAGE, found), no_category, image_in_view=2)
    assert again.message == ""  # not the image in view: nothing to say
    kept = [i for i in project.instances(1) if i.source == Source.HUMAN]
    assert [i.id for i in kept] == [outcome.added[0].id] and len(project.instances(1)) == 3


def test_proposing_on_a_reviewed_image_adds_what_is_new_beside_the_labels_and_says_what_it_left_out(
    project: Project, review: Review
) -> None:
    label = project.add_instance(1, 1, bbox=(0, 0, 5, 5))  # a box-only label, drawn by hand
    project.set_review_state(1, ReviewState.DONE)
    found = detections(("blob", 0.9, (0, 0, 5, 5)), ("blob", 0.6, (10, 10, 4, 4)), ("dot", 0.5, (10, 10, 4, 4)))
    outcome = store_result(review, result(PromptKind.IMAGE, found), no_category, image_in_view=1)
    assert [(i.bbox, i.source) for i in outcome.added] == [((10.0, 10.0, 4.0, 4.0), Source.MODEL)]
    assert outcome.message == "Propose: 1 new proposal beside your labels; 2 left out: they repeat what is there"
    assert project.image(1).state == ReviewState.DONE and label in project.instances(1)
    review.history.undo()
    assert project.instances(1) == [label]
    nothing = store_result(review, result(PromptKind.IMAGE, detections()), no_category, image_in_view=1)
    assert nothing.message == "Propose: the model found nothing on this image"


def test_a_box_becomes_a_label_of_the_current_category_without_a_score_and_puts_the_image_in_review(
    project: Project, review: Review
) -> None:
    found = detections(("blob", 0.8, (2, 3, 6, 5)), ("other", 0.7, (20, 20, 3, 3)))
    cell = project.category_by_name("cell")
    outcome = store_result(review, result(PromptKind.BOX, found), lambda: cell, image_in_view=1)
    (added,) = outcome.added
    assert (added.category_id, added.source, added.score, added.model_version) == (
        cell.id,
        Source.HUMAN,
        None,
        "net@1234abcd",
    )
    assert added.bbox == (2.0, 3.0, 6.0, 5.0)  # the best detection only
    assert outcome.select == [added.id] and outcome.message == "Box to mask: added cell"
    assert project.image(1).state == ReviewState.IN_REVIEW
    assert review.history.undo_text == "Box to mask" and project.category_by_name("blob") is None
    review.history.undo()
    assert project.instances(1) == []


def test_a_click_becomes_a_selected_proposal_of_the_models_class_with_its_score(
    project: Project, review: Review
) -> None:
    project.add_category("ring")
    found = detections(("blob", 0.4, (0, 0, 10, 10)), ("ring", 0.6, (5, 5, 10, 10)), ("far", 0.9, (30, 20, 5, 5)))
    outcome = store_result(review, result(PromptKind.POINT, found, point=(7.5, 6.2)), no_category, image_in_view=1)
    (added,) = outcome.added
    assert project.category(added.category_id).name == "ring" and added.score == pytest.approx(0.6)
    assert added.source == Source.MODEL and outcome.select == [added.id]
    assert outcome.message == "Click to segment: added ring"
    assert project.image(1).state == ReviewState.PROPOSED and review.history.undo_text == "Click to segment"


def test_a_clicks_proposal_of_a_class_the_project_does_not_have_takes_the_current_category(
    project: Project, review: Review
) -> None:
    found = detections(("star", 0.3, (5, 5, 10, 10)))  # a class only the model knows
    cell = project.category_by_name("cell")
    outcome = store_result(review, result(PromptKind.POINT, found, point=(7.5, 6.2)), lambda: cell, image_in_view=1)
    (added,) = outcome.added
    assert (added.category_id, added.source, added.score) == (cell.id, Source.MODEL, pytest.approx(0.3))
    assert outcome.message == "Click to segment: added cell" and outcome.select == [added.id]
    assert project.category_by_name("star") is None


OBJECT = (12, 6, 12, 12)  # x, y, w, h of the one object the fake box to mask finds


def box_to_mask(calls: list) -> Callable[[tuple[float, float, float, float]], Detections]:
    """A fake ``predict_in_box`` with a user's category: the pixels of OBJECT whose centres lie in
    the box, scored by how well the box fits the object (box IoU), as the model's objectness would."""
    x, y, w, h = OBJECT

    def segment(box: tuple[float, float, float, float]) -> Detections:
        calls.append(box)
        x1, y1, x2, y2 = box
        columns, rows = np.arange(WIDTH) + 0.5, np.arange(HEIGHT) + 0.5
        inside = ((rows >= y1) & (rows < y2))[:, None] & ((columns >= x1) & (columns < x2))[None, :]
        mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
        mask[y : y + h, x : x + w] = True
        overlap = max(0.0, min(x2, x + w) - max(x1, x)) * max(0.0, min(y2, y + h) - max(y1, y))
        fit = overlap / ((x2 - x1) * (y2 - y1) + w * h - overlap)
        return Detections(np.array([box], np.float32), np.array([fit], np.float32), ["cat"], (mask & inside)[None])

    return segment


def test_a_click_no_detection_holds_is_box_to_mask_on_a_box_grown_from_it() -> None:
    calls: list = []
    far = detections(("blob", 0.9, (30, 20, 5, 5)))
    (proposal,) = proposals_at_click(far, (18.5, 12.5), (HEIGHT, WIDTH), box_to_mask(calls))
    assert proposal.label_name == "cat" and masks.bbox(proposal.rle) == OBJECT  # the whole object
    assert masks.area(proposal.rle) == OBJECT[2] * OBJECT[3]
    squares = calls[: len(GROWN_BOX_SIDES)]  # centred on the click, fractions of the shorter side
    assert [round(x2 - x1, 2) for x1, _, x2, _ in squares] == [round(s * HEIGHT, 2) for s in GROWN_BOX_SIDES]
    assert all((x1 + x2) / 2 == 18.5 and (y1 + y2) / 2 == 12.5 for x1, y1, x2, y2 in squares)
    # the best square (10.5 px) cut the object; box to mask ran again on its mask's box, wider
    x1, y1, x2, y2 = calls[-1]
    assert len(calls) == len(GROWN_BOX_SIDES) + 1 and x1 < 13 and y1 < 7 and x2 > 23 and y2 > 17


def test_a_click_a_detection_holds_asks_for_no_box_and_one_nothing_holds_gives_nothing() -> None:
    calls: list = []
    found = detections(("blob", 0.2, (15, 10, 5, 5)))
    (proposal,) = proposals_at_click(found, (16.5, 11.5), (HEIGHT, WIDTH), box_to_mask(calls))
    assert proposal.label_name == "blob" and calls == []
    assert proposals_at_click(found, (35.5, 25.5), (HEIGHT, WIDTH), box_to_mask(calls)) == []
    assert len(calls) == len(GROWN_BOX_SIDES)  # no square's mask held the click: no second try


def test_a_prompt_that_finds_nothing_says_so_and_adds_nothing(project: Project, review: Review) -> None:
    found = detections(("blob", 0.9, (0, 0, 5, 5)))
    outcome = store_result(review, result(PromptKind.POINT, found, point=(30, 25)), no_category, image_in_view=2)
    assert outcome.added == [] and outcome.message == "The model found nothing there"
    assert project.instances(1) == [] and len(review.history) == 0


def test_a_prompts_result_for_an_image_no_longer_in_view_is_stored_but_not_selected(
    project: Project, review: Review
) -> None:
    cell = project.category_by_name("cell")
    outcome = store_result(
        review, result(PromptKind.BOX, detections(("blob", 0.8, (2, 3, 6, 5)))), lambda: cell, image_in_view=2
    )
    assert len(outcome.added) == 1 and outcome.select == [] and outcome.message == ""
    assert project.image(1).state == ReviewState.UNLABELED


def test_the_detection_at_a_point_is_the_best_scoring_mask_holding_its_pixel() -> None:
    found = detections(("a", 0.5, (0, 0, 10, 10)), ("b", 0.7, (5, 5, 10, 10)), ("c", 0.9, (8, 0, 2, 2)))
    assert detection_at(found, (6.9, 6.9)) == 1
    assert detection_at(found, (4.9, 4.9)) == 0  # pixel (4, 4): only the first holds it
    assert detection_at(found, (39, 29)) is None
    assert detection_at(detections(), (1, 1)) is None


def test_a_click_on_instances_picks_the_best_proposal_there_else_the_smallest(project: Project) -> None:
    def add(side: int, score: float | None) -> object:
        mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
        mask[:side, :side] = True
        source = Source.HUMAN if score is None else Source.MODEL
        return project.add_instance(1, 1, mask=mask, score=score, source=source)

    big_label, small_label, weak, strong = add(20, None), add(5, None), add(15, 0.2), add(10, 0.6)
    assert instance_at_click([big_label, weak, small_label, strong]) == strong  # under the threshold counts too
    assert instance_at_click([big_label, small_label]) == small_label
    assert instance_at_click([]) is None


def test_refining_boxes_fills_only_the_labels_still_box_only_and_says_which_stay_boxes(
    project: Project, review: Review
) -> None:
    cell = project.category_by_name("cell")
    kept, masked_meanwhile, gone, missed = (project.add_instance(1, cell.id, bbox=(2, 2, 12, 10)).id for _ in range(4))
    project.update_instance(masked_meanwhile, polygons=[[0, 0, 5, 0, 5, 5, 0, 5]])
    project.delete_instance(gone)
    found = proposals_for(PromptKind.BOX, detections(("any", 0.9, (3, 3, 8, 6))))[0]
    refine = ProposalResult(1, "net@1", [found, found, found], PromptKind.REFINE)
    refine.targets, refine.asked = (kept, masked_meanwhile, gone), 4  # ``missed``: the model found no mask

    outcome = store_result(review, refine, no_category, image_in_view=1)

    assert [i.id for i in outcome.added] == outcome.select == [kept]
    assert project.instance(kept).rle == found.rle and project.instance(kept).category_id == cell.id
    assert project.instance(masked_meanwhile).bbox == (0, 0, 5, 5)  # its own mask, not the model's
    assert project.instance(missed).rle is None
    assert outcome.message == "Refined 1 box into a mask; the model found no mask in 1 box, left as boxes"
    assert project.image(1).state == ReviewState.IN_REVIEW
    review.history.undo()
    assert project.instance(kept).rle is None and project.instance(kept).bbox == (2, 2, 12, 10)


def test_prompt_kinds_name_their_edits() -> None:
    titles = ["Propose", "Box to mask", "Click to segment", "Refine boxes to masks"]
    assert [kind.title for kind in PromptKind] == titles
    assert PromptKind("point") is PromptKind.POINT
