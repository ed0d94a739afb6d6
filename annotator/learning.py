"""Learn as you label, without Qt: one round fine-tunes the model in use on the images marked done,
compares the new model with it on the held-out done images, and keeps the new one only if it is
not worse. ``image_uncertainty`` says on which image the model is least sure, for "most useful
image next". The app and ``bench/effort.py --rounds`` go through the same round; the choices are in
docs/decisions/0013-learning-loop.md.

A round exports the done images as COCO (``annotator.coco.export_coco``, as the fine-tune dialog
does), splits them by ``held_out`` into the images trained on and those held out, runs ``main.py
train`` on the first as a child process at lower priority with its CPU threads limited, and runs
``main.py evaluate`` on the second for the current and the new model. Nothing in the project
changes; a round's files are in its run folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from annotator.interchange import AtomicWriter, read_json
from annotator.records import ImageRecord, ReviewState, Source
from annotator.review import DEFAULT_SCORE_THRESHOLD
from annotator.store import Project

MAIN_PY = Path(__file__).resolve().parents[1] / "main.py"

# a fifth of the done images are held out: the fine-tune dialog's default fraction
HELD_OUT_FRACTION = 0.2
# images newly marked done between two rounds (docs/decisions/0013-learning-loop.md)
DEFAULT_ROUND_SIZE = 10
# a round's length: this many passes over the images it trains on, in at most this many optimizer
# steps (docs/decisions/0013-learning-loop.md, "How long a round trains")
ROUND_EPOCHS = 120
ROUND_MAX_ITERATIONS = 1000
# how much nicer than the app the training runs: the UI thread wins every contest for a core
CHILD_NICENESS = 10
# Fewer held-out images than this and an AP says next to nothing about a model: one image's AP
# jumps by tens of points with one detection. A round then uses the new model untested (as with
# none), and the fine-tune dialog says so and asks first.
MIN_HELD_OUT_IMAGES = 2


def held_out(image: ImageRecord, fraction: float = HELD_OUT_FRACTION) -> bool:
    """Whether a done image is held out for comparing models rather than trained on: decided by its
    content hash alone (the first 64 bits of its SHA-256 as a fraction of 2^64, under ``fraction``),
    so an image stays on its side in every round, whatever else is done, and a copy of an image is
    never on both sides."""
    return int(image.sha256[:16], 16) < fraction * 2**64


@dataclass(frozen=True)
class TrainingRequest:
    """One run of ``main.py train``: what it starts from and how long it trains."""

    base_weights: str  # registry name or weights file
    epochs: float
    val_fraction: float  # fraction of the exported images ``main.py train`` holds out itself
    device: str
    run_dir: Path
    iterations: int | None = None  # optimizer steps instead of epochs (tests: a handful)
    lr: float | None = None  # None: the training's default for its batch size
    batch_size: int | None = None  # None: ``main.py train``'s default


def train_command(request: TrainingRequest, coco_file: Path, image_root: Path) -> list[str]:
    """The command line of ``main.py train`` for a request. Its events: ``progress`` (iteration,
    total, epoch, loss, each loss term, lr, eta_s), ``eval`` (stage ``before`` / ``during`` /
    ``after``; ``bbox``, ``segm``, ``keypoints`` each with ``AP`` as a fraction), ``checkpoint``
    (path), ``done`` (path of the final weights), ``error`` (message)."""
    length = ["--iters", str(request.iterations)] if request.iterations else ["--epochs", f"{request.epochs:g}"]
    length += ["--lr", f"{request.lr:g}"] if request.lr is not None else []
    length += ["--batch-size", str(request.batch_size)] if request.batch_size is not None else []
    return [
        *[sys.executable, "-u", str(MAIN_PY), "train", str(coco_file), "--images", str(image_root)],
        *["--weights", request.base_weights, *length, "--val-fraction", f"{request.val_fraction:g}"],
        *["--device", request.device, "--out", str(request.run_dir)],
        *["--log-period", "1"],  # a point on the loss plot every step: a short run is a line too
    ]


def evaluate_command(weights: str, coco_file: Path, image_root: Path, device: str) -> list[str]:
    """The command line of ``main.py evaluate --json``: its last line is one JSON object with
    ``bbox``, ``segm`` (and ``keypoints``), each with ``AP`` as a fraction."""
    return [
        *[sys.executable, "-u", str(MAIN_PY), "evaluate", str(coco_file), "--images", str(image_root)],
        *["--weights", weights, "--device", device, "--json"],
    ]


def _json_object(line: str) -> dict | None:
    """The JSON object one output line of a child ``main.py`` holds, or None (plain logging)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def parse_event(line: str) -> dict | None:
    """The event of one output line, or None for a line that is not a JSON event (plain logging)."""
    value = _json_object(line)
    return value if value is not None and isinstance(value.get("event"), str) else None


def mask_ap(summary: dict | None) -> float | None:
    """The mask (segm) AP of an evaluation (an ``eval`` event or ``evaluate --json``), else its box
    AP; None when it has neither (pycocotools leaves AP undefined without ground truth)."""
    segm = _ap(summary, "segm")
    return segm if segm is not None else _ap(summary, "bbox")


def keypoint_ap(summary: dict | None) -> float | None:
    """The keypoint AP of an evaluation; None for a model without keypoints, or undefined."""
    return _ap(summary, "keypoints")


def _ap(summary: dict | None, key: str) -> float | None:
    value = (summary or {}).get(key)
    if isinstance(value, dict) and isinstance(value.get("AP"), (int, float)) and value["AP"] >= 0:
        return float(value["AP"])
    return None


def image_uncertainty(scores: Sequence[float | None], threshold: float = DEFAULT_SCORE_THRESHOLD) -> float:
    """How unsure the model is of one image, in [0, 1], from its proposals' scores (every score
    the Predictor returns, shown or not): the mean closeness of a score to the threshold at which
    proposals are shown, ``1 - |s - t| / max(t, 1 - t)``, so 1 for a proposal right at the
    threshold (the person must judge whether it is there at all) and 0 for one at 0 or 1. An image
    with no proposal scores 1: the model found nothing, so the person draws everything, or it is
    empty and a look settles it. Proposals asked for by a box (score None) do not count."""
    known = [float(s) for s in scores if s is not None]
    if not known:
        return 1.0
    spread = max(threshold, 1.0 - threshold)
    return sum(max(0.0, 1.0 - abs(s - threshold) / spread) for s in known) / len(known)


def image_doubts(project: Project, threshold: float = DEFAULT_SCORE_THRESHOLD) -> dict[int, float]:
    """:func:`image_uncertainty` of every proposed image nobody has reviewed yet (state PROPOSED),
    by image id, from the scores of its proposals."""
    scores: dict[int, list[float | None]] = {image.id: [] for image in project.iter_images(ReviewState.PROPOSED)}
    for instance in project.iter_instances(states=[ReviewState.PROPOSED]):
        if instance.source == Source.MODEL:
            scores[instance.image_id].append(instance.score)
    return {image_id: image_uncertainty(found, threshold) for image_id, found in scores.items()}


def least_sure_next(project: Project, image_id: int, threshold: float = DEFAULT_SCORE_THRESHOLD) -> int:
    """ "Done, next" in the least-sure order: the proposed image the model is least sure of (ties
    in list order), else the next image nobody has reviewed in list order (``Review.next_to_review``'s
    rule); 0 when every image is reviewed."""
    doubts = {i: d for i, d in image_doubts(project, threshold).items() if i != image_id}
    if doubts:
        return max(sorted(doubts), key=lambda i: doubts[i])
    ids = [r.id for r in project.iter_images(states=[ReviewState.UNLABELED]) if r.id != image_id]
    later = [i for i in ids if i > image_id] or ids
    return later[0] if later else 0


# --- one round ----------------------------------------------------------------------------------------


@dataclass
class RoundSettings:
    """How rounds train: ``epochs`` passes over the images trained on in at most ``max_iterations``
    optimizer steps of ``batch_size`` images (``iterations``: exactly that many steps instead), on
    ``device`` ("auto": the GPU when there is one), with at most ``threads`` CPU threads (None: half
    the cores, at least one: the app's own model thread keeps the other half) at ``niceness`` more
    than the app."""

    epochs: float = ROUND_EPOCHS
    max_iterations: int = ROUND_MAX_ITERATIONS
    iterations: int | None = None
    batch_size: int = 2
    lr: float | None = None
    device: str = "auto"
    threads: int | None = None
    niceness: int = CHILD_NICENESS
    held_out_fraction: float = HELD_OUT_FRACTION
    # told of each child process as it starts (training, evaluations), so that it can be ended
    on_process: Callable[[subprocess.Popen], None] | None = None

    def cpu_threads(self) -> int:
        return self.threads or max(1, (os.cpu_count() or 1) // 2)

    def round_iterations(self, images: int) -> int:
        """The optimizer steps of a round that trains on ``images`` images."""
        if self.iterations:
            return self.iterations
        return max(1, min(self.max_iterations, math.ceil(self.epochs * images / self.batch_size)))

    def whole_epochs(self, images: int) -> int:
        """The whole passes over ``images`` images that a round's steps make, at least one: the
        fine-tune dialog's default length, in its unit."""
        return max(1, self.round_iterations(images) * self.batch_size // max(1, images))


@dataclass
class RoundResult:
    """What a round decided. ``weights`` is the model in use after it: the new one when it was
    kept, else the one the round started from. ``reason`` says why, in a line for the status bar."""

    weights: str
    replaced: bool
    reason: str
    failed: bool = False
    trained_on: int = 0
    held_out: int = 0
    current_ap: float | None = None  # mask AP on the held-out images
    new_ap: float | None = None
    current_keypoint_ap: float | None = None  # None: no keypoints, or not measured
    new_keypoint_ap: float | None = None
    train_seconds: float = 0.0
    iterations: int = 0  # the training's optimizer steps
    run_dir: Path | None = None
    log: list[str] = field(default_factory=list)  # the children's output that was not an event

    def both_keypoint_aps(self) -> bool:
        """Whether both models have a held-out keypoint AP, so that the comparison weighs it."""
        return self.new_keypoint_ap is not None and self.current_keypoint_ap is not None


@dataclass
class ChildRun:
    """A finished child process: its exit status, its JSON events and its other output lines."""

    status: int
    events: list[dict]
    log: list[str]

    def error(self) -> str | None:
        """Why it failed, in a line (its ``error`` event, else its last output line), or None."""
        errors = [e.get("message", "") for e in self.events if e.get("event") == "error"]
        if errors:
            return str(errors[-1])
        if self.status != 0:
            last = next((line for line in reversed(self.log) if line.strip()), "")
            return f"exit status {self.status}" + (f": {last.strip().removeprefix('error: ')}" if last else "")
        return None


def child_environment(settings: RoundSettings) -> dict[str, str]:
    """The environment of a training or evaluation child: unbuffered output, and its CPU threads
    limited (torch takes its intra-op threads from OMP_NUM_THREADS)."""
    threads = str(settings.cpu_threads())
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def lower_priority(pid: int, niceness: int) -> None:
    """Raises a child's niceness by ``niceness`` (POSIX); its threads, made later, inherit it."""
    if niceness and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + niceness))
        except (ProcessLookupError, PermissionError):  # ended already, or not ours to change
            pass


def start_child(command: list[str], cwd: Path | None, environment: dict[str, str]) -> subprocess.Popen:
    """``command`` started in its own process group (ending the group ends its data-loader workers
    and a torchrun launcher's children too), its output and errors as one text stream of lines."""
    kwargs: dict[str, Any] = (
        {"start_new_session": True} if os.name == "posix" else {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    )
    return subprocess.Popen(
        command,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
        env=environment,
        **kwargs,
    )


def run_child(
    command: list[str], cwd: Path, settings: RoundSettings, on_event: Callable[[dict], None] | None = None
) -> ChildRun:
    """Runs ``command`` to its end at lower priority, in its own process group (a data-loader worker
    goes with it), handing each JSON event to ``on_event`` as it comes; ``settings.on_process``
    hears of the process as it starts (the app ends it when it quits)."""
    process = start_child(command, cwd, child_environment(settings))
    if settings.on_process is not None:
        settings.on_process(process)
    lower_priority(process.pid, settings.niceness)
    events: list[dict] = []
    log: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        event = parse_event(line)
        if event is None:
            log.append(line.rstrip())
            continue
        events.append(event)
        if on_event is not None:
            on_event(event)
    return ChildRun(process.wait(), events, log)


def write_split(coco_file: Path, held_out_ids: set[int], train_file: Path, held_out_file: Path) -> tuple[int, int]:
    """Splits an exported COCO file into the images trained on and those held out (each with its
    annotations and every category); returns how many images each has."""
    value = read_json(coco_file)
    sides = {False: (train_file, []), True: (held_out_file, [])}
    for entry in value["images"]:
        sides[entry["id"] in held_out_ids][1].append(entry)
    for file, images in sides.values():
        ids = {entry["id"] for entry in images}
        part = {**value, "images": images, "annotations": [a for a in value["annotations"] if a["image_id"] in ids]}
        with AtomicWriter(file) as out:
            out.write(json.dumps(part))
    return len(sides[False][1]), len(sides[True][1])


def held_out_ap(
    weights: str, held_out_file: Path, image_root: Path, cwd: Path, settings: RoundSettings
) -> tuple[float, float | None]:
    """The mask AP and the keypoint AP (None for a model without keypoints) of ``weights`` on the
    held-out images (``main.py evaluate`` as a child process); an undefined mask AP counts 0.
    Raises RuntimeError saying why when the evaluation fails."""
    done = run_child(evaluate_command(weights, held_out_file, image_root, settings.device), cwd, settings)
    summary = parse_summary(done.log[-1]) if done.log else None
    problem = done.error() or (None if summary else "it printed no figures")
    if problem is not None:
        raise RuntimeError(f"evaluating {Path(weights).name} failed: {problem}")
    return mask_ap(summary) or 0.0, keypoint_ap(summary)


def not_worse(result: RoundResult) -> bool:
    """The comparison of a round: the new model is not worse than the current one when the mean of
    its held-out mask AP and keypoint AP is at least the current one's; by mask AP alone where
    either has no keypoint AP (a model without keypoints, held-out images without any). Ties go to
    the new model."""
    if not result.both_keypoint_aps():
        return result.new_ap >= result.current_ap
    return result.new_ap + result.new_keypoint_ap >= result.current_ap + result.current_keypoint_ap


def _compared(result: RoundResult) -> str:
    """The APs of the new and the current model, as the status bar gives them."""
    masks = f"mask AP {100 * result.new_ap:.1f} against {100 * result.current_ap:.1f}"
    if not result.both_keypoint_aps():
        return masks
    return f"{masks}, keypoint AP {100 * result.new_keypoint_ap:.1f} against {100 * result.current_keypoint_ap:.1f}"


def parse_summary(line: str) -> dict | None:
    """The JSON object of ``evaluate --json``'s last line, or None for another line."""
    value = _json_object(line)
    return value if value is not None and "weights" in value else None


def learning_round(
    project: Project,
    current_weights: str,
    run_dir: Path,
    settings: RoundSettings | None = None,
    on_event: Callable[[dict], None] | None = None,
) -> RoundResult:
    """One round: fine-tune ``current_weights`` on the done images not held out (``held_out``),
    then keep the new model if it is not worse on the held-out done images (``not_worse``: mask AP,
    and keypoint AP where there is one). With fewer than ``MIN_HELD_OUT_IMAGES`` held-out images
    the new model is kept untested (said in ``reason``). A training or evaluation that fails, or
    nothing to train on, keeps the current model and says why; the project is only read.
    ``on_event`` receives the training's events as they come."""
    from annotator.coco import export_coco
    from model.training.checkpoint import discard_checkpoints  # torch: loaded by the model in use already

    settings = settings or RoundSettings()
    if Path(current_weights).is_file():  # the children run in the run folder
        current_weights = str(Path(current_weights).resolve())
    kept = RoundResult(current_weights, False, "", run_dir=run_dir)
    done = project.images(ReviewState.DONE)
    held = {image.id for image in done if held_out(image, settings.held_out_fraction)}
    if len(done) == len(held):
        kept.reason, kept.held_out = "nothing to train on: no image marked done outside the held-out ones", len(held)
        return kept
    run_dir.mkdir(parents=True, exist_ok=True)
    export_coco(project, run_dir / "done.json", only_done=True, rle=True)
    train_file, held_out_file = run_dir / "train.json", run_dir / "held-out.json"
    kept.trained_on, kept.held_out = write_split(run_dir / "done.json", held, train_file, held_out_file)
    request = TrainingRequest(
        current_weights,
        settings.epochs,
        0.0,
        settings.device,
        run_dir,
        settings.round_iterations(kept.trained_on),
        settings.lr,
        settings.batch_size,
    )
    kept.iterations = request.iterations or 0
    started = time.monotonic()
    training = run_child(train_command(request, train_file, project.image_root), run_dir, settings, on_event)
    kept.train_seconds = time.monotonic() - started
    kept.log = training.log
    # a round is never continued; its model is model_final. Earlier rounds' folders too: those of
    # rounds run before rounds removed their own still hold theirs (twice the weights' size each)
    for round_dir in {run_dir, *run_dir.parent.glob("round-*")}:
        discard_checkpoints(round_dir)
    finished = [e for e in training.events if e.get("event") == "done"]
    problem = training.error() or (None if finished else "the training ended without its weights")
    if problem is not None:
        kept.failed, kept.reason = True, f"training failed: {problem}"
        return kept
    new_weights = str(finished[-1].get("path"))
    if kept.held_out < MIN_HELD_OUT_IMAGES:
        untested = f"too few held-out images to compare ({kept.held_out}): the new model is used untested"
        return dataclasses.replace(kept, weights=new_weights, replaced=True, reason=untested)
    try:
        on_held_out = (held_out_file, project.image_root, run_dir, settings)
        kept.current_ap, kept.current_keypoint_ap = held_out_ap(current_weights, *on_held_out)
        kept.new_ap, kept.new_keypoint_ap = held_out_ap(new_weights, *on_held_out)
    except RuntimeError as error:
        kept.failed, kept.reason = True, str(error)
        return kept
    compared = f"{_compared(kept)} on {kept.held_out} held-out images"
    if not not_worse(kept):
        kept.reason = f"kept the current model: the new one is worse ({compared})"
        return kept
    return dataclasses.replace(
        kept, weights=new_weights, replaced=True, reason=f"switched to the new model ({compared})"
    )
