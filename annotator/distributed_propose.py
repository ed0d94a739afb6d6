"""``main.py propose`` under ``torchrun``, on one machine or several. No Qt.

Only rank 0 opens the project file: SQLite's locking lets processes of one machine share it, but
not over a network file system. Rank 0 lists the images to propose and sends the list to every
rank, each image with its absolute path as rank 0's project resolves it: every rank reads the
images itself, so every machine needs them at that path. The ranks take the images in turns, one
each a round; after a round each sends its image's proposals, masks already RLE-encoded, to rank
0, which stores them image by image. So memory holds one round, and a run that stops (Ctrl+C, a
failed rank) keeps every image stored before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotator.proposals import (
    Proposal,
    ProposalCategories,
    ProposalReport,
    images_to_propose,
    settle_precision,
    store_proposals,
    to_proposals,
    usable_pixels,
)
from annotator.store import Project
from model.errors import InputError
from model.images import read_image
from model.training.comm import Distributed, RunStopped, run_stopped_if_a_peer_ends


@dataclass(frozen=True)
class ImageToPropose:
    """One image of the work list rank 0 sends to every rank."""

    image_id: int
    path: str  # absolute, as rank 0's project resolves it
    width: int  # as the project has it: an image of another size now is skipped
    height: int


@dataclass
class ProposedImage:
    """What a rank sends rank 0 for one image of its turn."""

    image_id: int
    proposals: list[Proposal]
    model_version: str
    skipped: str | None = None  # the image could not be used: one line naming it and why


def work_list(project: Project, unlabeled_only: bool) -> list[ImageToPropose]:
    """The images to propose (``images_to_propose``), as the ranks without the project need them."""
    return [
        ImageToPropose(image.id, str(project.image_path(image).absolute()), image.width, image.height)
        for image in images_to_propose(project, unlabeled_only)
    ]


def propose_image(predictor: Any, image: ImageToPropose) -> ProposedImage:
    """``predictor``'s proposals for ``image``, read from its path on this machine. The first image a
    rank reads settles its precision, as ``annotator.proposals.propose`` does: bfloat16 is judged on
    each machine's own processor."""
    try:
        pixels = usable_pixels(read_image(image.path), image.path, image.width, image.height)
    except InputError as error:  # unreadable (ImageReadError) or resized
        return ProposedImage(image.image_id, [], predictor.model_version, skipped=f"{error}; skipped")
    settle_precision(predictor, pixels)
    return ProposedImage(image.image_id, to_proposals(predictor.predict(pixels)), predictor.model_version)


def propose_on_ranks(
    distributed: Distributed,
    project_path: Path,
    unlabeled_only: bool,
    load_predictor: Callable[[], Any],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[ProposalReport, Any] | None:
    """This rank's part of a ``torchrun`` run of ``propose``: on rank 0 the report and its predictor,
    on the others None. Rank 0 reads ``project_path`` (the others never open it) and calls
    ``progress(images done, images in all)`` after each round.

    Raises:
        InputError: this rank's problem (the project on rank 0, the weights on any rank).
        RunStopped: on a rank other than 0, another rank ended first; rank 0 reports it instead in
            ``ProposalReport.stopped_by``, with what it stored before.
    """
    with run_stopped_if_a_peer_ends(distributed):
        if not distributed.is_main:
            images = distributed.broadcast(None)
            _propose_turns(distributed, load_predictor(), images)
            return None
        with Project.open(project_path) as project:
            images = distributed.broadcast(work_list(project, unlabeled_only))
            predictor = load_predictor()
            return _propose_and_store(distributed, project, predictor, images, progress), predictor


def _propose_turns(distributed: Distributed, predictor: Any, images: list[ImageToPropose]) -> None:
    """A rank other than 0: its image of each round, sent to rank 0 (None when the list has run out)."""
    for start in range(0, len(images), distributed.world_size):
        index = start + distributed.rank
        distributed.gather_to_main(propose_image(predictor, images[index]) if index < len(images) else None)


def _propose_and_store(
    distributed: Distributed,
    project: Project,
    predictor: Any,
    images: list[ImageToPropose],
    progress: Callable[[int, int], None] | None,
) -> ProposalReport:
    """Rank 0: its own image of each round and then the other ranks', stored as they come."""
    category_for = ProposalCategories.of_predictor(project, predictor)
    report = ProposalReport()

    def store(result: ProposedImage) -> None:
        if result.skipped is not None:
            report.warnings.append(result.skipped)
            return
        written = store_proposals(project, result.image_id, result.proposals, result.model_version, category_for)
        report.images += 1
        report.instances += len(written.added)

    try:
        with run_stopped_if_a_peer_ends(distributed):
            for start in range(0, len(images), distributed.world_size):
                store(propose_image(predictor, images[start]))  # stored before waiting for the others
                others = distributed.gather_to_main(None)[1:]
                for result in others:
                    if result is not None:
                        store(result)
                if progress is not None:
                    progress(min(start + distributed.world_size, len(images)), len(images))
    except KeyboardInterrupt:
        report.stopped = True
    except RunStopped as error:
        report.stopped, report.stopped_by = True, str(error)
    report.precision_note = getattr(predictor, "precision_note", "")  # rank 0's, as one process says it
    return report
