"""What a model result means for the project, Qt-free. The model thread (annotator.gui.proposals)
turns the predictor's output into proposals with :func:`proposals_for`; the UI thread writes them
with :func:`store_result`. The window only passes results along (tests/test_prompts.py checks the
rules headless).

There are four kinds of request (:class:`PromptKind`):

- the whole image (Model → Propose, auto-propose): every detection becomes a proposal
  (``source=model``, with its score), replacing the image's proposals nobody touched; on an image
  a person has started on (in review) or finished (done) the proposals are added beside what is
  there instead, except those that repeat an instance there, and the status bar says so;
- a box a person drew (box to mask): the best detection in the box becomes a label of the current
  category. The person drew the box for that category, so it is ``source=human`` and has no score
  (the class score of a drawn box is no detection score); the model version stays as its
  provenance, and the image goes in review;
- a click (click to segment): the highest-scoring detection whose mask holds the clicked pixel,
  of any class and at any score, becomes a proposal with its score, selected so that Enter accepts
  it; where no detection holds the pixel, box to mask on a box grown from the click gives it
  (:func:`box_grown_from`). It keeps its class when the project has that category, and takes the
  current category otherwise: a class only the model knows says nothing about a project that
  labels other things (docs/decisions/0016);
- box-only labels a person selected (Model → Refine boxes to masks): box to mask on each one's box
  with its category, and each mask goes into that label in place (its id, category and keypoints
  stay), all of them as one undo step (docs/decisions/0015). A label that gained a mask meanwhile,
  or went, is left as it is.

A category the model does not know (a user's "cat") still gets masks: ``predict_in_box`` segments
the box class-agnostic and gives the caller's category.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from annotator.commands import Change
from annotator.proposals import Proposal, ProposalCategories, to_proposals
from annotator.review import Review, duplicates, region
from annotator.store import Category, Instance, ReviewState, Source
from annotator.wording import counted

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels

# Click to segment where no detection holds the click: box to mask on squares centred on it, these
# fractions of the image's shorter side across (objects from small to half the image), then once
# more on the best mask's own box, this fraction of its longer side wider on every side.
GROWN_BOX_SIDES: tuple[float, ...] = (0.1, 0.2, 0.35, 0.5)
GROWN_BOX_MARGIN = 0.1


class PromptKind(enum.StrEnum):
    """What the model was asked about: a whole image, a box or a point a person gave."""

    IMAGE = "image"
    BOX = "box"
    POINT = "point"
    REFINE = "refine"

    @property
    def title(self) -> str:
        """The name of the edit (undo menu, status bar)."""
        return {
            PromptKind.IMAGE: "Propose",
            PromptKind.BOX: "Box to mask",
            PromptKind.POINT: "Click to segment",
            PromptKind.REFINE: "Refine boxes to masks",
        }[self]


@dataclass
class ProposalResult:
    """One answer of the model thread, for one image, with the masks already encoded."""

    image_id: int
    model_version: str
    proposals: list[Proposal] = field(default_factory=list)
    prompt: PromptKind = PromptKind.IMAGE
    # the model's keypoint names and skeleton (0-based pairs), for categories it adds to the project
    keypoint_names: tuple[str, ...] = ()
    keypoint_skeleton: tuple[tuple[int, int], ...] = ()
    # REFINE: the box-only instance each proposal is the mask of, in the same order, and how many
    # boxes were asked about (those the model found no mask in have no proposal)
    targets: tuple[int, ...] = ()
    asked: int = 0


def detection_at(instances: Any, point: tuple[float, float]) -> int | None:
    """The index of the highest-scoring detection in ``instances`` (``scores`` N, ``masks``
    N x H x W) whose mask holds the pixel under image point ``point`` (x, y); None where no mask
    does."""
    found = None if getattr(instances, "masks", None) is None else np.asarray(instances.masks)
    if found is None or not len(found):
        return None
    holding = np.flatnonzero(found[:, int(point[1]), int(point[0])])
    if not holding.size:
        return None
    return int(holding[int(np.argmax(np.asarray(instances.scores)[holding]))])


def box_grown_from(
    point: tuple[float, float], image_size: tuple[int, int], segment_box: Callable[[Box], Any]
) -> list[Proposal]:
    """Box to mask on a box grown from a click that no detection holds: ``segment_box`` (the
    predictor's ``predict_in_box`` with the current category) on squares centred on ``point``,
    ``GROWN_BOX_SIDES`` of the image's shorter side (``image_size`` height, width) across. The mask
    that holds the click with the best score wins, and box to mask runs once more on that mask's
    box with ``GROWN_BOX_MARGIN`` around it, as a person would redraw the box round the object;
    the redrawn mask is kept when it still holds the click. No mask holding the click: nothing."""
    height, width = image_size
    x, y = point
    best: tuple[float, Any, int] | None = None  # score, instances, the one holding the click
    for side in GROWN_BOX_SIDES:
        half = max(1.0, side * min(height, width) / 2)
        found = segment_box((max(0.0, x - half), max(0.0, y - half), min(width, x + half), min(height, y + half)))
        at = detection_at(found, point)
        if at is not None and (best is None or float(np.asarray(found.scores)[at]) > best[0]):
            best = float(np.asarray(found.scores)[at]), found, at
    if best is None:
        return []
    _, found, at = best
    ys, xs = np.nonzero(np.asarray(found.masks)[at])
    margin = GROWN_BOX_MARGIN * max(xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min())
    redrawn = segment_box(
        (
            max(0.0, xs.min() - margin),
            max(0.0, ys.min() - margin),
            min(width, xs.max() + 1 + margin),
            min(height, ys.max() + 1 + margin),
        )
    )
    again = detection_at(redrawn, point)
    return to_proposals(found, [at]) if again is None else to_proposals(redrawn, [again])


def proposals_at_click(
    instances: Any, point: tuple[float, float], image_size: tuple[int, int], segment_box: Callable[[Box], Any]
) -> list[Proposal]:
    """What a click gives: the detection at ``point`` in the image's ``instances`` (any class, any
    score), else box to mask on a box grown from the click (:func:`box_grown_from`)."""
    found = proposals_for(PromptKind.POINT, instances, point)
    return found or box_grown_from(point, image_size, segment_box)


def instance_at_click(under_click: list[Instance]) -> Instance | None:
    """What a click on existing instances picks before the model is asked: the best-scoring
    proposal under the click (every proposal counts, also those under the score threshold), else
    the smallest instance there; None for none."""
    proposals = [i for i in under_click if i.source == Source.MODEL]
    if proposals:
        return max(proposals, key=lambda i: i.score or 0.0)
    return min(under_click, key=lambda i: i.area, default=None)


def proposals_for(prompt: PromptKind, instances: Any, point: tuple[float, float] | None = None) -> list[Proposal]:
    """The proposals a prediction gives for ``prompt``: all of them for an image, the first (best)
    for a box, the detection at ``point`` for a point. Encodes masks: the model thread's work."""
    if prompt == PromptKind.BOX:
        return to_proposals(instances)[:1]
    if prompt == PromptKind.POINT:
        best = detection_at(instances, point)
        return [] if best is None else to_proposals(instances, [best])
    return to_proposals(instances)


@dataclass(frozen=True)
class PromptOutcome:
    """What :func:`store_result` did: the instances added, a line for the status bar ("" for
    none), and the instances to select."""

    added: list[Instance]
    message: str = ""
    select: list[int] = field(default_factory=list)


def store_result(
    review: Review, result: ProposalResult, current_category: Callable[[], Category], image_in_view: int
) -> PromptOutcome:
    """Writes ``result`` to the project as one undo step, as its prompt means (module docstring).
    ``current_category()`` gives the category a box's label takes, and a click's proposal of a
    class the project does not have; ``image_in_view`` is the image the person has open (only what
    concerns it is selected and reported)."""
    project = review.project
    categories = ProposalCategories(project, result.keypoint_names, result.keypoint_skeleton)
    in_view = result.image_id == image_in_view
    if result.prompt == PromptKind.REFINE:
        return _refine_boxes(review, result, in_view)
    if result.prompt == PromptKind.IMAGE:
        if project.image(result.image_id).state in (ReviewState.IN_REVIEW, ReviewState.DONE):
            return _beside_what_is_there(review, result, categories, in_view)
        added = review.history.add_proposals(
            result.image_id, result.proposals, result.model_version, category_for=categories
        )
        return PromptOutcome(added, f"{len(result.proposals)} proposals" if in_view else "")
    if not result.proposals:
        return PromptOutcome([], "The model found nothing there")
    box = result.prompt == PromptKind.BOX
    proposals = result.proposals
    if box:
        category = current_category()
        proposals = [replace(p, label_name=category.name, score=None) for p in proposals]
    elif project.category_by_name(proposals[0].label_name) is None:
        proposals = [replace(p, label_name=current_category().name) for p in proposals]
    added = review.history.add_proposals(
        result.image_id,
        proposals,
        result.model_version,
        replace=False,
        source=Source.HUMAN if box else Source.MODEL,
        text=result.prompt.title,
        category_for=categories,
    )
    if not (added and in_view):
        return PromptOutcome(added)
    if box:
        review.mark_in_review(result.image_id)
    return PromptOutcome(
        added, f"{result.prompt.title}: added {project.category(added[0].category_id).name}", [added[0].id]
    )


def box_only(instance: Instance) -> bool:
    """Whether ``instance`` is a box still to be refined into a mask (docs/decisions/0015)."""
    return instance.rle is None


def _refine_boxes(review: Review, result: ProposalResult, in_view: bool) -> PromptOutcome:
    """Each mask into the box-only label it was asked for, in place, as one undo step."""
    project = review.project
    changes = []
    with project.transaction():
        for target, proposal in zip(result.targets, result.proposals, strict=True):
            if proposal.rle is None or not project.id_in_use("instances", target):
                continue
            before = project.instance(target)
            if box_only(before):  # not given a mask meanwhile (another program, an undo)
                changes.append(Change(before, project.update_instance(target, rle=proposal.rle)))
    if changes:
        review.history.record(result.prompt.title, result.image_id, changes)
        review.mark_in_review(result.image_id)
    refined = [c.after for c in changes if c.after is not None]
    if not in_view:
        return PromptOutcome(refined)
    missed = result.asked - len(result.proposals)
    message = f"Refined {counted(len(refined), 'box', 'boxes')} into {'a mask' if len(refined) == 1 else 'masks'}"
    if missed:
        message += f"; the model found no mask in {counted(missed, 'box', 'boxes')}, left as boxes"
    return PromptOutcome(refined, message, [i.id for i in refined])


def _beside_what_is_there(
    review: Review, result: ProposalResult, categories: ProposalCategories, in_view: bool
) -> PromptOutcome:
    """Proposals for an image a person has started on or finished: they are added beside what is
    there (its labels and proposals stay as they are), except those that repeat an instance there
    (``annotator.review.duplicates``); they stay proposals until accepted. The status line says
    what was added and what was left out, so a run is never discarded in silence."""
    project = review.project
    image = project.image(result.image_id)
    shape = image.height, image.width
    present = [region(i.rle, i.bbox, *shape) for i in project.instances(image.id)]
    candidates = [(region(p.rle, p.box, *shape), p.score) for p in result.proposals]
    repeated = set(duplicates(candidates, present))
    new = [p for k, p in enumerate(result.proposals) if k not in repeated]
    added = review.history.add_proposals(
        image.id, new, result.model_version, replace=False, text="Propose beside the labels", category_for=categories
    )
    if not in_view:
        return PromptOutcome(added)
    left_out = f"; {len(repeated)} left out: they repeat what is there" if repeated else ""
    if not result.proposals:
        return PromptOutcome(added, "Propose: the model found nothing on this image")
    return PromptOutcome(added, f"Propose: {counted(len(added), 'new proposal')} beside your labels{left_out}")
