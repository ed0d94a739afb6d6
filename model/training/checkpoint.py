"""Checkpoints: everything a run needs to continue exactly where it stopped, written so that a crash
never leaves a half-written file under a checkpoint's name.

A run folder holds ``checkpoint_<iteration>.pth`` files (the newest ``keep`` of them), a
``last_checkpoint`` text file naming the newest (Detectron2's habit) and, at the end,
``model_final.safetensors``. A checkpoint is also a weights file: its ``model`` and ``config``
are what ``model.weights`` reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from model.detector import MaskRCNN
from model.files import flush_to_disk
from model.training.options import TrainOptions

CHECKPOINT_PREFIX = "checkpoint_"
LAST_CHECKPOINT = "last_checkpoint"  # a text file naming the newest checkpoint (Detectron2's habit)
FINAL_WEIGHTS = "model_final.safetensors"


def _atomic_save(value: Any, path: Path) -> None:
    """``torch.save`` to a hidden file beside ``path``, flushed to disk, then renamed over it."""
    partial = path.with_name(f".{path.name}.partial")
    torch.save(value, partial)
    flush_to_disk(partial)
    os.replace(partial, path)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint ``last_checkpoint`` names, else the one of the highest iteration, else None."""
    pointer = run_dir / LAST_CHECKPOINT
    if pointer.is_file():
        path = run_dir / pointer.read_text().strip()
        if path.is_file():
            return path
    found = sorted(run_dir.glob(f"{CHECKPOINT_PREFIX}*.pth"))
    return found[-1] if found else None


def save_checkpoint(
    run_dir: Path,
    iteration: int,
    model: MaskRCNN,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    scaler: torch.amp.GradScaler,
    options: TrainOptions,
    rng_states: list[dict[str, Any]],
    keep: int,
) -> Path:
    """Everything needed to continue: a ``.pth`` that is also a weights file (``model`` and
    ``config``, read by ``model.weights``). Written beside and renamed; then ``last_checkpoint``
    names it and all but the newest ``keep`` checkpoints go (``keep`` 0: all stay).

    ``rng_states``: ``rng_state`` of every rank, in rank order.
    """
    path = run_dir / f"{CHECKPOINT_PREFIX}{iteration:07d}.pth"
    _atomic_save(
        {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "config": model.config.to_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "iteration": iteration,
            "options": options.to_dict(),
            "rng": rng_states,
        },
        path,
    )
    pointer = run_dir / f".{LAST_CHECKPOINT}.partial"
    pointer.write_text(path.name + "\n")
    flush_to_disk(pointer)
    os.replace(pointer, run_dir / LAST_CHECKPOINT)
    if keep > 0:
        for old in sorted(run_dir.glob(f"{CHECKPOINT_PREFIX}*.pth"))[:-keep]:
            old.unlink(missing_ok=True)
    return path


def discard_checkpoints(run_dir: Path) -> None:
    """Removes a finished run's checkpoints and ``last_checkpoint``, leaving its final weights: for
    runs that will never be continued (each checkpoint holds the optimizer's state, twice the
    weights' size)."""
    for path in run_dir.glob(f"{CHECKPOINT_PREFIX}*.pth"):
        path.unlink(missing_ok=True)
    (run_dir / LAST_CHECKPOINT).unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint as ``save_checkpoint`` wrote it, tensors on the CPU (no code is unpickled)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def restore_training_state(
    checkpoint: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    scaler: torch.amp.GradScaler,
    rank: int,
    device: torch.device,
) -> int:
    """Continue from ``checkpoint``: the optimizer, schedule, gradient scaler and this rank's random
    generators (a rank the run did not have takes one of them) as they were. Returns the iteration
    it was written at. The model's weights are loaded apart, before it is wrapped for DDP."""
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    scaler.load_state_dict(checkpoint["scaler"])
    states = checkpoint["rng"]
    set_rng_state(states[rank % len(states)], device)
    return int(checkpoint["iteration"])


def rng_state(device: torch.device) -> dict[str, Any]:
    """The state of torch's generator (and of ``device``'s, on CUDA)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
