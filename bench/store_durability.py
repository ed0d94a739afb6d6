"""Durability under SIGKILL: a child process edits a project (instances added and changed and
deleted, review states, COCO imports, proposal batches) or writes training checkpoints, and is
killed with SIGKILL at a random moment; after each kill the project must hold every edit the
child acknowledged (printed after the call returned), every import and proposal batch must be
there whole or not at all, SQLite's integrity check and ``main.py check`` must pass, and the
newest checkpoint must load and restore a training state.

    python bench/store_durability.py --kills 100       # the full run (a few minutes on 2 cores)

``tests/annotator/test_store_durability.py`` runs a few kills of it. Not part of CI's timings.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from annotator.project_check import check_project  # noqa: E402
from annotator.store import Project, ReviewState, Source  # noqa: E402

SIZE = (48, 40)  # (width, height) of the project's images
EDIT_IMAGES = 4
PROPOSAL_IMAGES = 4
IMPORT_ANNOTATIONS = 5  # per imported image
OPERATIONS = {"edit": 5, "delete": 1, "state": 2, "import": 1, "propose": 2}


# -- the child: edits, acknowledged one by one ------------------------------------------------------


def _mask(rng: random.Random) -> tuple[np.ndarray, int]:
    mask = np.zeros((SIZE[1], SIZE[0]), dtype=bool)
    x, y = rng.randrange(SIZE[0] - 8), rng.randrange(SIZE[1] - 8)
    mask[y : y + rng.randint(2, 8), x : x + rng.randint(2, 8)] = True
    return mask, x


def _import_one(project: Project, rng: random.Random, name: str, first_id: int) -> None:
    """A COCO file of one new image (its file written first) with IMPORT_ANNOTATIONS boxes, their
    ids from ``first_id`` on (an import keeps free ids: ids a delete freed would be taken again)."""
    from annotator.importing import import_source

    folder = project.image_root
    Image.fromarray(np.full((SIZE[1], SIZE[0], 3), rng.randrange(256), np.uint8)).save(folder / name)
    annotations = [
        {"id": first_id + k, "image_id": 1, "category_id": 1, "bbox": [k * 6, 2, 5, 5 + rng.randrange(20)]}
        for k in range(IMPORT_ANNOTATIONS)
    ]
    coco = {
        "images": [{"id": 1, "file_name": name, "width": SIZE[0], "height": SIZE[1]}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "thing"}],
    }
    source = folder / f"{name}.json"
    source.write_text(json.dumps(coco))
    import_source(project, source)


def say(*words: object) -> None:
    """One line to the parent in one write(2) to the pipe (atomic under PIPE_BUF bytes): a kill lands
    before or after an acknowledgement, never inside it, as it could between print()'s pieces."""
    os.write(sys.stdout.fileno(), (" ".join(str(word) for word in words) + "\n").encode())


def store_child(path: Path, seed: int) -> None:
    """Edits the project at ``path`` until killed; prints ``begin OP`` before each operation (with
    what it changes, for a delete or a review state) and one acknowledgement line after it returned."""
    from annotator.proposals import Proposal, ProposalCategories, store_proposals

    rng = random.Random(seed)
    project = Project.open(path)
    edit_images = [image.id for image in project.images() if image.file_name.startswith("edit")]
    proposal_images = [image.id for image in project.images() if image.file_name.startswith("propose")]
    thing = project.category_by_name("thing")
    categories = ProposalCategories(project)
    mine: list[int] = []
    say("ready")
    for n in range(10**9):
        op = rng.choices(list(OPERATIONS), weights=list(OPERATIONS.values()))[0]
        if op in ("edit", "import", "propose"):  # delete and state say what they will change
            say("begin", op)
        if op == "edit":
            mask, _ = _mask(rng)
            instance = project.add_instance(rng.choice(edit_images), thing.id, mask=mask)
            moved, x = _mask(rng)
            project.update_instance(instance.id, mask=moved)
            mine.append(instance.id)
            say("E", instance.id, x)
        elif op == "delete" and mine:
            victim = mine.pop(rng.randrange(len(mine)))
            say("begin delete", victim)
            project.delete_instance(victim)
            say("D", victim)
        elif op == "state":
            image, state = rng.choice(edit_images), rng.choice(list(ReviewState))
            say("begin state", image, int(state))
            project.set_review_state(image, state)
            say("S", image, int(state))
        elif op == "import":
            name = f"import-{seed}-{n}.png"
            _import_one(project, rng, name, 10**12 + (seed * 10**6 + n) * IMPORT_ANNOTATIONS)
            say("I", name)
        elif op == "propose":
            image, version = rng.choice(proposal_images), f"batch-{seed}-{n}"
            proposals = []
            for _ in range(rng.randint(1, 6)):
                mask, _ = _mask(rng)
                proposals.append(Proposal("thing", rng.random(), _rle(mask), (0, 0, 1, 1), None))
            store_proposals(project, image, proposals, version, categories)
            say("P", image, version, len(proposals))


def _rle(mask: np.ndarray) -> dict:
    from annotator import masks

    return masks.encode(mask)


def checkpoint_child(run_dir: Path) -> None:
    """Writes training checkpoints of the small model until killed, numbered on from the newest in
    ``run_dir`` as a resumed run's are; prints ``C ITERATION`` after each."""
    import itertools

    import torch

    from model.training.checkpoint import latest_checkpoint, rng_state, save_checkpoint
    from model.training.options import TrainOptions, make_optimizer, make_scheduler

    model, options = _small_model(), TrainOptions(iterations=10**6)
    optimizer = make_optimizer(model, options, 1)
    for parameter in model.parameters():  # one step, so that the optimizer has state to save
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    scheduler, scaler = make_scheduler(optimizer, options), torch.amp.GradScaler("cpu", enabled=False)
    say("ready")
    newest = latest_checkpoint(run_dir)
    start = 1 if newest is None else int(newest.stem.removeprefix("checkpoint_")) + 1
    for iteration in itertools.count(start):
        say("begin checkpoint")
        optimizer.step()
        scheduler.step()
        save_checkpoint(
            run_dir, iteration, model, optimizer, scheduler, scaler, options, [rng_state(torch.device("cpu"))], 2
        )
        say("C", iteration)


def _small_model():
    from model.builders import config_for
    from model.detector import MaskRCNN

    return MaskRCNN(config_for("maskrcnn_resnet18_fpn_small", min_size=128, max_size=128))


# -- the parent: kill, reopen, compare -----------------------------------------------------------------


@dataclass
class Ledger:
    """What the children acknowledged, across kills."""

    edits: dict[int, int] = field(default_factory=dict)  # instance id -> its x after the update
    deleted: set[int] = field(default_factory=set)
    # image id -> the states it may be in: the last acknowledged, and one a killed child was setting
    states: dict[int, set[int]] = field(default_factory=dict)
    imports: set[str] = field(default_factory=set)
    batches: dict[int, tuple[str, int]] = field(default_factory=dict)  # image -> (version, proposals)
    maybe_deleted: int | None = None  # an instance a killed child was deleting
    checkpoint: int = 0


@dataclass
class DurabilityReport:
    kills: int = 0
    killed_during: Counter = field(default_factory=Counter)
    acknowledged: Counter = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)  # acknowledged edits not found as acknowledged
    torn: list[str] = field(default_factory=list)  # imports or batches found in part
    integrity: Counter = field(default_factory=Counter)  # "ok" or SQLite's first problem
    checkpoints_failed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        during = ", ".join(f"{op} {n}" for op, n in sorted(self.killed_during.items()))
        acked = ", ".join(f"{op} {n}" for op, n in sorted(self.acknowledged.items()))
        return [
            f"{self.kills} SIGKILLs in {self.seconds:.0f} s; killed during: {during}",
            f"acknowledged: {acked}",
            f"acknowledged edits lost: {len(self.lost)} {self.lost[:5]}",
            f"imports or proposal batches found in part: {len(self.torn)} {self.torn[:5]}",
            f"integrity_check and main.py check after each kill: {dict(self.integrity)}",
            f"checkpoints that failed to resume: {len(self.checkpoints_failed)} {self.checkpoints_failed[:5]}",
        ]


def make_project(folder: Path) -> Path:
    images = folder / "images"
    images.mkdir(parents=True)
    with Project.create(folder / "p.annot", images) as project:
        project.add_category("thing")
        for k in range(EDIT_IMAGES):
            project.add_image(f"edit-{k}.png", *SIZE, "h")
        for k in range(PROPOSAL_IMAGES):
            project.add_image(f"propose-{k}.png", *SIZE, "h")
    return folder / "p.annot"


def _kill_once(kind: str, target: Path, seed: int, rng: random.Random, report: DurabilityReport) -> list[str]:
    """Starts a child, kills it at a random moment after it is ready; returns its lines."""
    child = subprocess.Popen(
        [sys.executable, __file__, f"--child={kind}", str(target), f"--seed={seed}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None
    ready = child.stdout.readline()
    if ready.strip() != "ready":
        child.kill()
        raise RuntimeError(f"the {kind} child did not start: {ready!r}")
    time.sleep(rng.uniform(0.05, 1.5 if kind == "store" else 3.0))
    if child.poll() is not None:
        raise RuntimeError(f"the {kind} child ended by itself (status {child.returncode}) before it was killed")
    os.kill(child.pid, signal.SIGKILL)
    lines = child.stdout.read().splitlines()
    child.wait()
    begun = [line.split()[1] for line in lines if line.startswith("begin")]
    report.killed_during[begun[-1] if begun else "start"] += 1
    report.kills += 1
    return lines


def _record(lines: list[str], ledger: Ledger, report: DurabilityReport) -> None:
    """Adds what the child acknowledged to ``ledger``, and what it may have done as it was killed."""
    for line in lines:
        kind, *values = line.split()
        if kind == "E":
            ledger.edits[int(values[0])] = int(values[1])
        elif kind == "D":
            ledger.deleted.add(int(values[0]))
        elif kind == "S":
            ledger.states[int(values[0])] = {int(values[1])}
        elif kind == "I":
            ledger.imports.add(values[0])
        elif kind == "P":
            ledger.batches[int(values[0])] = (values[1], int(values[2]))
        elif kind == "C":
            ledger.checkpoint = int(values[0])
        if kind in "EDSIPC":
            report.acknowledged[kind] += 1
    if lines and lines[-1].startswith("begin"):  # the operation the kill interrupted
        _, op, *values = lines[-1].split()
        if op == "state":
            ledger.states.setdefault(int(values[0]), set()).add(int(values[1]))
        elif op == "delete":
            ledger.maybe_deleted = int(values[0])


def verify_project(path: Path, ledger: Ledger, report: DurabilityReport) -> None:
    """After a kill: every acknowledged edit there as acknowledged, imports and batches whole."""
    with Project.open(path) as project:
        integrity = project.integrity_check()
        checked = check_project(project)
        report.integrity["ok" if integrity == "ok" and checked.sound else (checked.lines() + [integrity])[0]] += 1
        stored = {instance.id: instance for instance in project.iter_instances()}
        if ledger.maybe_deleted is not None and ledger.maybe_deleted not in stored:
            ledger.deleted.add(ledger.maybe_deleted)  # the delete landed before the kill
        ledger.maybe_deleted = None
        for instance_id, x in ledger.edits.items():
            if instance_id in ledger.deleted:
                if instance_id in stored:
                    report.lost.append(f"deleted instance {instance_id} is back")
            elif instance_id not in stored or stored[instance_id].bbox[0] != x:
                report.lost.append(f"instance {instance_id}: {'gone' if instance_id not in stored else 'not updated'}")
        for image_id, states in ledger.states.items():
            state = int(project.image(image_id).state)
            if state not in states:
                report.lost.append(f"image {image_id}: state {state}, acknowledged {sorted(states)}")
            ledger.states[image_id] = {state}
        for image in project.images():
            if image.file_name.startswith("import-"):
                count = len(project.instances(image.id))
                if count != IMPORT_ANNOTATIONS:
                    report.torn.append(f"{image.file_name}: {count} of {IMPORT_ANNOTATIONS} instances")
        names = {image.file_name for image in project.images()}
        report.lost += [f"import {name} gone" for name in ledger.imports - names]
        for image_id, (version, count) in ledger.batches.items():
            proposals = [i for i in project.instances(image_id) if i.source == Source.MODEL]
            versions = Counter(i.model_version for i in proposals)
            if len(versions) != 1:
                report.torn.append(f"image {image_id}: proposals of {dict(versions)}")
            elif version in versions and versions[version] != count:
                report.torn.append(f"image {image_id}: {versions[version]} of {count} proposals of {version}")


def verify_checkpoint(run_dir: Path, ledger: Ledger, report: DurabilityReport) -> None:
    """The newest checkpoint loads, is no older than the last acknowledged, and restores a run."""
    import torch

    from model.training.checkpoint import latest_checkpoint, load_checkpoint, restore_training_state
    from model.training.options import TrainOptions, make_optimizer, make_scheduler

    try:
        path = latest_checkpoint(run_dir)
        if path is None:
            raise RuntimeError("no checkpoint found")
        checkpoint = load_checkpoint(path)
        model = _small_model()
        model.load_state_dict(checkpoint["model"])
        options = TrainOptions.from_dict(checkpoint["options"])
        optimizer = make_optimizer(model, options, 1)
        scheduler, scaler = make_scheduler(optimizer, options), torch.amp.GradScaler("cpu", enabled=False)
        iteration = restore_training_state(checkpoint, optimizer, scheduler, scaler, 0, torch.device("cpu"))
        if iteration < ledger.checkpoint:
            raise RuntimeError(f"resumes at {iteration}, but {ledger.checkpoint} was acknowledged")
    except Exception as error:  # noqa: BLE001 - every failure to resume is a finding
        report.checkpoints_failed.append(f"{type(error).__name__}: {error}")


def run_kills(folder: Path, kills: int, seed: int = 0, checkpoint_every: int = 5) -> DurabilityReport:
    """``kills`` SIGKILLs, every ``checkpoint_every``-th one of a checkpoint writer (0: none)."""
    rng, report, started = random.Random(seed), DurabilityReport(), time.monotonic()
    path = make_project(folder)
    run_dir = folder / "run"
    run_dir.mkdir()
    ledgers = {
        "store": Ledger(states={k + 1: {int(ReviewState.UNLABELED)} for k in range(EDIT_IMAGES)}),
        "checkpoint": Ledger(),
    }
    for k in range(kills):
        kind = "checkpoint" if checkpoint_every and k % checkpoint_every == checkpoint_every - 1 else "store"
        lines = _kill_once(kind, path if kind == "store" else run_dir, seed * 1000 + k, rng, report)
        _record(lines, ledgers[kind], report)
        if kind == "store":
            verify_project(path, ledgers[kind], report)
        else:
            verify_checkpoint(run_dir, ledgers[kind], report)
    report.seconds = time.monotonic() - started
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("store", "checkpoint"), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--folder", type=Path, help="where the project is built (default: a temporary folder)")
    args = parser.parse_args()
    if args.child == "store":
        store_child(Path(args.target), args.seed)
    elif args.child == "checkpoint":
        checkpoint_child(Path(args.target))
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as temporary:
            report = run_kills(args.folder or Path(temporary), args.kills, args.seed)
        print("\n".join(report.lines()))


if __name__ == "__main__":
    main()
