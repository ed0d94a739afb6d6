"""What labelling costs a person in the app, measured from real use, without Qt: how each kept label
came to be, the edits it took, and the active seconds spent per image, per model version and over
time (the order images were marked done). Review > Statistics shows it and ``main.py info --effort``
prints it; ``bench/effort.py`` simulates the same costs (docs/decisions/0012-effort-costs.md).

The store records the raw facts: ``Instance.edits`` (edits after the label was created),
``ImageRecord.active_seconds`` (added by :class:`ActiveTime` while the image is shown) and
``ImageRecord.done_at``. Only images marked done in the app count (``done_at`` set): an import's
labels cost nobody anything here.
"""

from __future__ import annotations

import enum
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from annotator.records import ImageRecord, Instance, ReviewState, Source
from annotator.store import Project
from annotator.wording import counted

# A gap between two inputs longer than this is a pause (coffee, a phone call), not work: it is not
# counted (issue 12: "idle gaps over a minute not counted").
IDLE_LIMIT_S = 60.0
# the label of images whose labels came from no model (drawn by hand, or no proposal kept)
NO_MODEL = "no model"


class ActiveTime:
    """Active seconds from the times inputs arrive: the time between two inputs counts when it is at
    most ``idle_limit``; :meth:`pause` (the window lost focus, the image changed) starts over, so
    the time until the next input does not count."""

    def __init__(self, idle_limit: float = IDLE_LIMIT_S) -> None:
        self.idle_limit = idle_limit
        self._last: float | None = None

    def input(self, now: float) -> float:
        """Notes an input at ``now`` (seconds, a monotonic clock); returns the seconds it adds."""
        last, self._last = self._last, now
        if last is None or not 0 <= now - last <= self.idle_limit:
            return 0.0
        return now - last

    def pause(self) -> None:
        self._last = None


class LabelOrigin(enum.StrEnum):
    """How a kept label came to be."""

    ACCEPTED = "accepted as-is"  # a proposal kept without an edit
    CORRECTED = "corrected"  # a proposal kept after edits (strokes, category, keypoints)
    BOX = "from a box"  # box to mask: the person drew the box, the model the mask
    DRAWN = "drawn"  # drawn by hand (polygon, brush, box) with no model involved


def label_origin(instance: Instance) -> LabelOrigin:
    """Read off the instance's provenance: a proposal keeps its score and model version when
    accepted; box to mask keeps the model version but has no score; a drawn label has neither."""
    if instance.model_version is None:
        return LabelOrigin.DRAWN
    if instance.score is None:
        return LabelOrigin.BOX
    return LabelOrigin.ACCEPTED if instance.edits == 0 else LabelOrigin.CORRECTED


@dataclass(frozen=True)
class EffortRow:
    """The effort over a group of done images. Shares are fractions (0..1) of the kept labels."""

    label: str  # a model version, or a range of images in the order they were marked done
    images: int
    instances: int
    accepted_as_is: float
    corrected: float
    from_box: float
    drawn: float
    edits_per_instance: float
    seconds_per_image: float  # mean active seconds
    median_seconds_per_image: float


def effort_row(label: str, images: Sequence[ImageRecord], labels: Sequence[Instance]) -> EffortRow:
    """The effort over ``images`` (done) and the ``labels`` kept on them."""
    origins = Counter(label_origin(i) for i in labels)
    share = {origin: origins[origin] / len(labels) if labels else 0.0 for origin in LabelOrigin}
    seconds = [image.active_seconds for image in images]
    return EffortRow(
        label=label,
        images=len(images),
        instances=len(labels),
        accepted_as_is=share[LabelOrigin.ACCEPTED],
        corrected=share[LabelOrigin.CORRECTED],
        from_box=share[LabelOrigin.BOX],
        drawn=share[LabelOrigin.DRAWN],
        edits_per_instance=sum(i.edits for i in labels) / len(labels) if labels else 0.0,
        seconds_per_image=statistics.fmean(seconds) if seconds else 0.0,
        median_seconds_per_image=statistics.median(seconds) if seconds else 0.0,
    )


def done_in_order(project: Project) -> list[tuple[ImageRecord, list[Instance]]]:
    """The images marked done in the app, in the order they were marked done, each with its kept
    labels (``source=human``; a locked proposal left on a done image is not a kept label)."""
    images = sorted(
        (image for image in project.iter_images(ReviewState.DONE) if image.done_at is not None),
        key=lambda image: (image.done_at, image.id),
    )
    labels: dict[int, list[Instance]] = defaultdict(list)
    for instance in project.iter_instances(states=[ReviewState.DONE]):
        if instance.source == Source.HUMAN:
            labels[instance.image_id].append(instance)
    return [(image, labels[image.id]) for image in images]


def image_model(labels: Iterable[Instance]) -> str:
    """The model an image was labelled with: the version most of its model-made labels carry."""
    versions = Counter(i.model_version for i in labels if i.model_version is not None)
    return versions.most_common(1)[0][0] if versions else NO_MODEL


def _rows(groups: dict[str, list[tuple[ImageRecord, list[Instance]]]]) -> list[EffortRow]:
    return [
        effort_row(label, [image for image, _ in done], [i for _, labels in done for i in labels])
        for label, done in groups.items()
    ]


def effort_by_model(project: Project) -> dict[str, EffortRow]:
    """The effort per model version (in the order each was first used), keyed by version."""
    groups: dict[str, list[tuple[ImageRecord, list[Instance]]]] = {}
    for image, labels in done_in_order(project):
        groups.setdefault(image_model(labels), []).append((image, labels))
    return {row.label: row for row in _rows(groups)}


def effort_over_time(project: Project, block: int = 10) -> list[EffortRow]:
    """The effort over each ``block`` images in the order they were marked done ("images 1-10")."""
    done = done_in_order(project)
    groups = {
        f"images {start + 1}-{min(start + block, len(done))}": done[start : start + block]
        for start in range(0, len(done), block)
    }
    return _rows(groups)


EFFORT_COLUMNS = ("", "images", "labels", "as-is", "corrected", "box", "drawn", "edits/label", "s/image")


def effort_cells(row: EffortRow) -> list[str]:
    """One row as the table shows it (the columns of ``EFFORT_COLUMNS``)."""
    return [
        row.label,
        str(row.images),
        str(row.instances),
        f"{100 * row.accepted_as_is:.0f}%",
        f"{100 * row.corrected:.0f}%",
        f"{100 * row.from_box:.0f}%",
        f"{100 * row.drawn:.0f}%",
        f"{row.edits_per_instance:.2f}",
        f"{row.seconds_per_image:.1f}",
    ]


def effort_table(rows: Sequence[EffortRow]) -> list[str]:
    """Rows as aligned text lines, the header first."""
    cells = [list(EFFORT_COLUMNS)] + [effort_cells(row) for row in rows]
    widths = [max(len(line[c]) for line in cells) for c in range(len(EFFORT_COLUMNS))]
    return [
        "  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(line, widths)))
        for line in cells
    ]


def effort_report(project: Project, block: int = 10) -> list[str]:
    """``main.py info --effort``: the effort per model version and over time."""
    done = done_in_order(project)
    if not done:
        return ["effort: no image has been marked done in the app yet"]
    return [
        f"effort on {counted(len(done), 'image')} marked done in the app"
        f" (active time; pauses over {IDLE_LIMIT_S:.0f} s not counted)",
        "per model:",
        *("  " + line for line in effort_table(list(effort_by_model(project).values()))),
        f"over time (each {block} images in the order they were marked done):",
        *("  " + line for line in effort_table(effort_over_time(project, block))),
    ]
