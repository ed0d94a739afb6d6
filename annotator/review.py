"""The review rules, Qt-free: which of an image's instances a person is shown, and what accepting,
rejecting, "accept all above the threshold", changing a category and marking an image done do to
its proposals and its review state. The window only forwards the person's request and shows the
outcome (tests/test_review.py runs the rules headless).

Every edit goes through the project's :class:`UndoStack`, so each one is a step that undo takes
back. One rule does not: the first edit a person makes on an unlabeled or proposed image puts it
in review (:meth:`Review.mark_in_review`), and undoing the edit leaves it there, as a person who
started on an image has started on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from annotator import masks
from annotator.commands import UndoStack
from annotator.store import Instance, Project, ReviewState, Source
from annotator.wording import counted

DEFAULT_SCORE_THRESHOLD = 0.5
# Marking an image done keeps a proposal only if its mask overlaps no label and no better proposal
# by more than this IoU. The model's per-class NMS already merges same-class boxes at 0.5; what
# is left at this overlap is one object seen as two classes, or a proposal over a drawn label,
# and two distinct objects rarely share half their union (COCO's crowded scenes included).
DUPLICATE_IOU = 0.5
# what "mark done and next" moves on to: images nobody has reviewed yet
TO_REVIEW = (ReviewState.UNLABELED, ReviewState.PROPOSED)


@dataclass
class ViewState:
    """How a person sees the instances: those whose Show box is unchecked (``hidden``), those
    locked against edits (``locked``), both by instance id, and the score a proposal needs to be
    shown (``score_threshold``, 0..1)."""

    hidden: set[int] = field(default_factory=set)
    locked: set[int] = field(default_factory=set)
    score_threshold: float = DEFAULT_SCORE_THRESHOLD

    def passes_threshold(self, instance: Instance) -> bool:
        """Labels always pass; a proposal passes when its score reaches the threshold (or it has
        no score to compare)."""
        return instance.source != Source.MODEL or instance.score is None or instance.score >= self.score_threshold

    def shows(self, instance: Instance, selection: Iterable[int] = ()) -> bool:
        """The one rule for what is shown (drawn on the canvas, taken by "accept all"): its Show
        box is checked, and it passes the threshold or is selected (a proposal under the
        threshold that the click tool picked stays in view while it is selected)."""
        return instance.id not in self.hidden and (self.passes_threshold(instance) or instance.id in selection)

    def editable(self, instance_id: int) -> bool:
        """Whether a tool may change the instance's mask or keypoints: neither locked nor hidden."""
        return instance_id not in self.locked and instance_id not in self.hidden


@dataclass(frozen=True)
class Done:
    """What marking an image done did: the proposals it accepted, those it discarded under the
    threshold, and those it discarded as duplicates of a label or of a better proposal (ids)."""

    accepted: list[int]
    discarded: list[int]
    duplicates: list[int] = field(default_factory=list)

    def summary(self) -> str:
        """A line for the status bar."""
        parts = [f"accepted {counted(len(self.accepted), 'proposal')}"]
        if self.duplicates:
            parts.append(f"discarded {counted(len(self.duplicates), 'duplicate')}")
        if self.discarded:
            parts.append(f"{len(self.discarded)} under the threshold")
        return "Done: " + ", ".join(parts)


def region(rle: masks.RLE | None, box: Sequence[float], height: int, width: int) -> masks.RLE:
    """A mask, or for a box-only instance or proposal its box ``(x, y, w, h)`` as a mask: what
    duplicates are judged on."""
    if rle is not None:
        return rle
    x, y, w, h = box
    return masks.from_polygons([[x, y, x + w, y, x + w, y + h, x, y + h]], height, width)


def duplicates(candidates: Sequence[tuple[masks.RLE, float | None]], present: Sequence[masks.RLE]) -> list[int]:
    """The indices of the ``candidates`` (mask, score) that repeat an object already there: mask
    IoU over ``DUPLICATE_IOU`` with a mask ``present``, or with a higher-scoring candidate that is
    kept. Candidates are judged best score first, whatever their class (a shape proposed both as a
    triangle and a star is one object)."""
    kept = list(present)
    repeated = []
    for index in sorted(range(len(candidates)), key=lambda i: -(candidates[i][1] or 0.0)):
        mask = candidates[index][0]
        if kept and masks.iou([mask], kept).max() > DUPLICATE_IOU:
            repeated.append(index)
        else:
            kept.append(mask)
    return repeated


class Review:
    """The review rules over one project's history and view state. ``on_state_changed(image_id)``
    hears of a review state changed outside the history (:meth:`mark_in_review`); changes made
    through the history reach the history's listener."""

    def __init__(
        self, history: UndoStack, view: ViewState, on_state_changed: Callable[[int], None] | None = None
    ) -> None:
        self.history = history
        self.view = view
        self.on_state_changed = on_state_changed

    @property
    def project(self) -> Project:
        return self.history.project

    def editable_selection(self, selection: Iterable[int]) -> list[int]:
        """The selected instances that accept, reject, merge, split and a category change act on:
        those that still exist and are not locked (hidden ones too: the person selected them)."""
        return [i for i in selection if self.project.id_in_use("instances", i) and i not in self.view.locked]

    def mark_in_review(self, image_id: int) -> bool:
        """The first edit a person makes on an unlabeled or proposed image puts it in review;
        returns whether the state changed."""
        if not image_id or self.project.image(image_id).state not in TO_REVIEW:
            return False
        self.project.set_review_state(image_id, ReviewState.IN_REVIEW)
        if self.on_state_changed is not None:
            self.on_state_changed(image_id)
        return True

    def accept(self, image_id: int, selection: Iterable[int]) -> list[int]:
        """A person keeps the selected proposals (``source=human``; score and model version stay
        as their provenance); returns the instance ids acted on."""
        ids = self.editable_selection(selection)
        if ids:
            self.history.accept(ids)
            self.mark_in_review(image_id)
        return ids

    def reject(self, image_id: int, selection: Iterable[int]) -> list[int]:
        """Deletes the selected instances ("Reject" when they are all proposals, else "Delete");
        returns their ids."""
        ids = self.editable_selection(selection)
        if ids:
            proposals = all(self.project.instance(i).source == Source.MODEL for i in ids)
            self.history.delete(ids, "Reject" if proposals else "Delete")
            self.mark_in_review(image_id)
        return ids

    def accept_all_shown(self, image_id: int) -> list[int]:
        """Accepts the image's proposals that are shown (Show checked, at or above the threshold)
        and not locked, as one step; returns their ids."""
        ids = [
            i.id
            for i in self.project.instances(image_id)
            if i.source == Source.MODEL and i.id not in self.view.locked and self.view.shows(i)
        ]
        if ids:
            self.history.accept(ids, f"Accept {len(ids)} proposals")
            self.mark_in_review(image_id)
        return ids

    def set_category(self, image_id: int, selection: Iterable[int], category_id: int) -> list[int]:
        """Gives the selected instances another category, as one step; returns the ids changed."""
        changed = [i.id for i in self.history.set_category(self.editable_selection(selection), category_id)]
        if changed:
            self.mark_in_review(image_id)
        return changed

    def mark_done(self, image_id: int) -> Done:
        """Done means the image holds what the person sees, once: its proposals at or above the
        score threshold are accepted, except those that duplicate a label or a better proposal
        (:func:`duplicates`), and the others are discarded, so that an export of done
        images (and the fine-tuning on it) never carries unreviewed low-score guesses or the
        model's own duplicates. Locked instances are left as they are; a proposal whose Show box
        is unchecked is judged by its score like the others. Up to three undo steps: the discard,
        the accept, the review state."""
        instances = self.project.instances(image_id)
        pending = [i for i in instances if i.source == Source.MODEL and i.id not in self.view.locked]
        passing = [i for i in pending if self.view.passes_threshold(i)]
        labels = [i for i in instances if i.source != Source.MODEL]
        image = self.project.image(image_id)
        shape = image.height, image.width
        candidates = [(region(i.rle, i.bbox, *shape), i.score) for i in passing]
        repeated = [passing[k].id for k in duplicates(candidates, [region(i.rle, i.bbox, *shape) for i in labels])]
        accepted = [i.id for i in passing if i.id not in repeated]
        discarded = [i.id for i in pending if not self.view.passes_threshold(i)]
        if discarded or repeated:
            self.history.delete(
                discarded + repeated,
                f"Discard {len(discarded)} proposals under the threshold and {len(repeated)} duplicates",
            )
        if accepted:
            self.history.accept(accepted, f"Accept {len(accepted)} proposals")
        self.history.set_review_state(image_id, ReviewState.DONE)
        return Done(accepted, discarded, repeated)

    def copy_previous_labels(self, image_id: int) -> str:
        """Edit > Copy labels from the previous image (as CVAT and X-AnyLabeling offer): the labels
        of the nearest image before this one (by id, the list's order) that has labels people kept
        become new labels here, as one step, and the image goes in review. Returns a line saying
        what was done, or why nothing was."""
        earlier = [r.id for r in self.project.iter_images() if r.id < image_id]
        kept = (i for i in reversed(earlier) if any(x.source == Source.HUMAN for x in self.project.instances(i)))
        source = next(kept, 0)
        if not source:
            return "No earlier image has labels to copy"
        try:
            copies = self.history.copy_labels(source, image_id)
        except ValueError as error:
            return f"Nothing copied: {error}"
        self.mark_in_review(image_id)
        return f"Copied {counted(len(copies), 'label')} from {self.project.image(source).file_name}"

    def next_to_review(self, image_id: int) -> int:
        """The image "done, next" goes to: the first one after ``image_id`` (by id) that nobody has
        reviewed, else the first such before it; 0 when every image is reviewed."""
        ids = [r.id for r in self.project.iter_images() if r.state in TO_REVIEW]
        later = [i for i in ids if i > image_id] or ids
        return later[0] if later else 0
