"""Model proposals into the project store, for the CLI's ``propose`` and the app. No Qt.

A proposal is an instance with ``source=model``, its score and the model version. Proposing an
image again replaces the model's earlier proposals there that nobody has touched (an edited or
accepted proposal has become ``source=human`` and stays). ``propose`` never visits images marked
done. The app encodes masks in its model thread (``to_proposals``) and writes them with
``store_proposals`` in the UI thread, wrapped in one undo step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from annotator import masks
from annotator.store import Category, ImageRecord, Instance, Project, ReviewState, Source
from model.config import skeleton_to_coco
from model.errors import InputError


@dataclass
class Proposal:
    """One predicted instance, ready for the store."""

    label_name: str
    score: float | None  # None for a mask asked for by a person's box
    rle: masks.RLE | None
    box: tuple[float, float, float, float]  # x, y, width, height in pixels
    keypoints: np.ndarray | None  # K x 3, v = 2 where predicted


def to_proposals(instances: Any, indices: list[int] | None = None) -> list[Proposal]:
    """Store-ready proposals from the Predictor's ``Instances`` (or the entries ``indices`` of
    them); empty masks are dropped. Encoding the masks is the slow part: the app calls this in its
    model thread."""
    boxes = np.asarray(instances.boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(instances.scores, dtype=np.float64).reshape(-1)
    names = list(instances.label_names)
    found = None if getattr(instances, "masks", None) is None else np.asarray(instances.masks)
    keypoints = (
        None if getattr(instances, "keypoints", None) is None else np.asarray(instances.keypoints, dtype=np.float64)
    )
    proposals = []
    for index in range(boxes.shape[0]) if indices is None else indices:
        x1, y1, x2, y2 = boxes[index]
        rle = None
        if found is not None:
            mask = found[index].astype(bool)
            if not mask.any():
                continue
            rle = masks.encode(mask)
        points = None
        # a model that gives some classes keypoints has v = 0 on the others' rows (model.person_pose)
        if keypoints is not None and keypoints.size and keypoints[index, :, 2].any():
            points = keypoints[index].copy()
            points[:, 2] = 2.0  # predicted keypoints are proposed as visible; the person corrects v
        proposals.append(Proposal(names[index], float(scores[index]), rle, (x1, y1, x2 - x1, y2 - y1), points))
    return proposals


class ProposalCategories:
    """The project's category for a class name the model predicts, added on first use (only the
    classes a model actually finds become categories, not all 80 of COCO). A category added so is
    only proposed (``Category.proposed``): the project's lists leave it out until a person keeps a
    label of it, so that a class the model wrongly finds does not become one of the person's. A
    new category of a keypoint model gets the model's keypoint names and skeleton; without them,
    ``kp1..kpK``. ``skeleton`` is the model's: 0-based index pairs (the store's, like COCO's, are
    1-based)."""

    def __init__(
        self, project: Project, keypoint_names: tuple[str, ...] = (), skeleton: tuple[tuple[int, int], ...] = ()
    ) -> None:
        self.project = project
        self.keypoint_names = tuple(keypoint_names)
        self.skeleton = skeleton_to_coco(skeleton)

    @classmethod
    def of_predictor(cls, project: Project, predictor: Any) -> ProposalCategories:
        return cls(project, predictor.keypoint_names, predictor.keypoint_skeleton)

    def __call__(self, name: str, num_keypoints: int = 0) -> Category:
        category = self.project.category_by_name(name)
        if category is None:
            names: tuple[str, ...] = ()
            skeleton: tuple[tuple[int, int], ...] = ()
            if num_keypoints:
                if len(self.keypoint_names) == num_keypoints:
                    names, skeleton = self.keypoint_names, self.skeleton
                else:
                    names = tuple(f"kp{k + 1}" for k in range(num_keypoints))
            category = self.project.add_category(name, keypoints=names, skeleton=skeleton, proposed=True)
        return category


@dataclass
class ProposalWrite:
    """What ``store_proposals`` changed, for an undo step."""

    deleted: list[Instance]
    added: list[Instance]
    state_before: ReviewState
    state_after: ReviewState


def store_proposals(
    project: Project,
    image_id: int,
    proposals: list[Proposal],
    model_version: str,
    category_for: Callable[[str, int], Category],
    *,
    replace: bool = True,
    source: Source = Source.MODEL,
) -> ProposalWrite:
    """Writes proposals to the store in one transaction.

    ``replace`` first deletes the image's untouched model proposals. Keypoints are kept where the
    category's schema has the model's number of keypoints. An unlabeled image becomes proposed.
    """
    image = project.image(image_id)
    deleted, added = [], []
    with project.transaction():
        if replace:
            deleted = [
                project.delete_instance(old.id) for old in project.instances(image_id) if old.source == Source.MODEL
            ]
        for proposal in proposals:
            points = proposal.keypoints
            category = category_for(proposal.label_name, 0 if points is None else len(points))
            if points is not None and len(points) != category.num_keypoints:
                points = None
            geometry = {"rle": proposal.rle} if proposal.rle is not None else {"bbox": proposal.box}
            added.append(
                project.add_instance(
                    image_id,
                    category.id,
                    **geometry,
                    keypoints=points,
                    score=proposal.score,
                    source=source,
                    model_version=model_version or None,
                )
            )
        state = image.state
        if image.state == ReviewState.UNLABELED and source == Source.MODEL:
            state = ReviewState.PROPOSED
            project.set_review_state(image_id, state)
    return ProposalWrite(deleted, added, image.state, state)


@dataclass
class ProposalReport:
    images: int = 0
    instances: int = 0
    stopped: bool = False  # interrupted before the last image; what was proposed is stored
    warnings: list[str] = field(default_factory=list)
    stopped_by: str | None = None  # under torchrun: another process ended the run, in one line
    precision_note: str = ""  # bfloat16 checked against float32 on the first image (Predictor.settle_precision)


def settle_precision(predictor: Any, image: np.ndarray) -> str:
    """``Predictor.settle_precision`` on the first image proposed on, for predictors that have it
    (the combined person predictor and test doubles need not)."""
    settle = getattr(predictor, "settle_precision", None)
    return settle([image]) if callable(settle) else ""


def images_to_propose(project: Project, unlabeled_only: bool) -> list[ImageRecord]:
    """The images not marked done (``unlabeled_only``: not labelled at all), in the project's order.
    Under torchrun rank 0 shares them out (``annotator.distributed_propose``)."""
    states = (
        [ReviewState.UNLABELED]
        if unlabeled_only
        else [ReviewState.UNLABELED, ReviewState.PROPOSED, ReviewState.IN_REVIEW]
    )
    return list(project.iter_images(states=states))


def usable_pixels(pixels: np.ndarray, path: Path | str, width: int, height: int) -> np.ndarray:
    """``pixels``, read from ``path``, if they are the ``width x height`` the project has the image
    as; an image replaced by one of another size would not fit the project's labels.

    Raises:
        InputError: naming ``path``, with both sizes.
    """
    found_height, found_width = pixels.shape[:2]
    if (found_width, found_height) != (width, height):
        raise InputError(path, f"the image is now {found_width}x{found_height}, the project has it as {width}x{height}")
    return pixels


def propose(
    project: Project,
    predictor: Any,
    images: list[ImageRecord],
    read_image: Callable[[ImageRecord], np.ndarray],
    on_image: Callable[[ImageRecord, int], None] | None = None,
) -> ProposalReport:
    """Runs ``predictor`` over ``images`` and stores the proposals image by image.

    Ctrl+C (KeyboardInterrupt) stops between or inside images: every image finished before it is
    stored, the image in progress is left as it was. An image that cannot be used is skipped with a
    one-line warning naming it, and the images after it are proposed: one that cannot be read (deleted
    or damaged since it was added, or too narrow for the model, see ``model.images.MAX_ASPECT_RATIO``),
    and one replaced by an image of another size (the project's labels would not fit it).
    """
    category_for = ProposalCategories.of_predictor(project, predictor)
    report = ProposalReport()
    try:
        for image in images:
            try:
                pixels = usable_pixels(read_image(image), project.image_path(image), image.width, image.height)
            except InputError as error:  # unreadable (ImageReadError) or resized
                report.warnings.append(f"{error}; skipped")
                continue
            report.precision_note = report.precision_note or settle_precision(predictor, pixels)
            instances = predictor.predict(pixels)
            written = store_proposals(project, image.id, to_proposals(instances), predictor.model_version, category_for)
            report.images += 1
            report.instances += len(written.added)
            if on_image is not None:
                on_image(image, len(written.added))
    except KeyboardInterrupt:
        report.stopped = True
    return report
