"""What the exports that write a folder of label files share (labelme JSON, YOLO segmentation):
which images and labels go out, the outlines they are written as, and the report. No Qt.

Which labels: as the COCO export (docs/decisions/0008), those people kept, and the model's
proposals only when asked for by score. Which images: these formats say "not labelled yet" by a
missing file, so an image gets a file when it has a label to write or is marked done (a done image
without labels is a real "nothing here", which YOLO learns as background); the others get none,
and the report counts them. Crowd regions are left out: neither format has them (Ultralytics'
own COCO converter skips them too).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from pathlib import Path

from annotator import masks
from annotator.store import ImageRecord, Instance, Project, ReviewState
from annotator.wording import counted


@dataclass
class FolderExport:
    """What a folder export wrote: ``files`` label files holding ``labels`` instances, in
    ``folder``; ``notes`` are lines for the user about what was left out or changed."""

    folder: Path
    kind: str  # "labelme file", "YOLO label file": what one of ``files`` is
    files: int = 0
    labels: int = 0
    proposals_left_out: int = 0
    images_without_labels: int = 0  # neither labelled nor done: no file written for them
    tallies: dict[tuple[str, str], int] = field(default_factory=dict)  # (what, plural) -> instances
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"wrote {counted(self.files, self.kind)} with {counted(self.labels, 'label')} to {self.folder}"

    def lines(self) -> list[str]:
        """Everything the user should know beyond the summary, one line each."""
        lines = [counted(count, *what) for what, count in self.tallies.items()]
        if self.images_without_labels:
            lines.append(
                f"{counted(self.images_without_labels, 'image')} with no labels and not marked done got "
                "no file (a missing file reads as 'not labelled yet')"
            )
        return lines + self.notes

    def tally(self, what: str, plural: str) -> None:
        """Counts one label left out or changed: ``what`` happened to it (``plural``: for several),
        as the count's noun ("crowd region left out ...")."""
        self.tallies[(what, plural)] = self.tallies.get((what, plural), 0) + 1


def images_to_export(
    project: Project, report: FolderExport, only_done: bool = False, proposals_from: float | None = None
) -> Iterator[tuple[ImageRecord, list[Instance]]]:
    """Each image of the export (all, or those marked done) with the instances to write on it,
    in id order, streamed: one image's instances are held at a time. Crowd regions are counted in
    ``report`` and left out."""
    states = [ReviewState.DONE] if only_done else None
    min_proposal_score = math.inf if proposals_from is None else proposals_from
    stream = groupby(project.iter_instances(states, None, min_proposal_score), key=attrgetter("image_id"))
    considered = 0
    next_group = next(stream, None)
    for image in project.iter_images(states=states):
        instances: list[Instance] = []
        while next_group is not None and next_group[0] <= image.id:  # both streams are in image id order
            if next_group[0] == image.id:
                instances = list(next_group[1])
            next_group = next(stream, None)
        considered += len(instances)
        for instance in instances:
            if instance.iscrowd:
                report.tally(
                    "crowd region left out (the format has none)", "crowd regions left out (the format has none)"
                )
        yield image, [instance for instance in instances if not instance.iscrowd]
    report.proposals_left_out = project.instance_count(states) - considered


def gets_file(image: ImageRecord, labels: int, report: FolderExport) -> bool:
    """Whether ``image`` gets a label file: it has ``labels`` to write, or is marked done."""
    if labels or image.state == ReviewState.DONE:
        return True
    report.images_without_labels += 1
    return False


def traced_outlines(instance: Instance) -> list[list[float]]:
    """The outer outlines of the instance's mask as flat ``[x1, y1, x2, y2, ...]`` polygons in
    pixel coordinates, traced as the COCO export traces them (``masks.polygons_json``: they
    rasterise back to the same pixels, holes filled); none for a box-only or empty instance."""
    if instance.rle is None:
        return []
    return json.loads(masks.polygons_json(instance.rle))


def outlines(instance: Instance) -> list[list[float]]:
    """The outline as drawn when the instance keeps one, else its traced mask (``traced_outlines``)."""
    if instance.polygons_json is not None:
        return [list(polygon) for polygon in instance.polygons or ()]
    return traced_outlines(instance)
