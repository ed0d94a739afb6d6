"""The jobs the training loop calls around its steps, each readable alone: the guard against
non-finite losses, progress (events, bar, TensorBoard), checkpoints and the final weights, and
evaluation on the held-out images.

A hook has ``before_train``, ``after_step`` and ``after_train`` methods (Detectron2's names) where
it has something to do then; ``model.training.loop.train`` calls them in an order that matters
and that it spells out.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from model.data import CocoData
from model.detector import MaskRCNN
from model.evaluation import evaluate
from model.predictor import Predictor
from model.training.checkpoint import FINAL_WEIGHTS, rng_state, save_checkpoint
from model.training.comm import Distributed
from model.training.events import EventLog, finite_or_none
from model.training.options import TrainOptions
from model.weights.formats import save_weights


@dataclass
class Step:
    """What one training step leaves for the hooks."""

    iteration: int  # steps done, this one included
    losses: dict[str, float]  # this rank's losses by name; empty when the step was skipped
    loss: float | None  # their sum; None when the step was skipped (a non-finite loss on some rank)
    grad_norm: float | None  # the gradients' norm before clipping; None without clipping or when skipped

    @property
    def skipped(self) -> bool:
        return self.loss is None


class NonFiniteGuard:
    """Drops a step whose loss is NaN or infinite on any rank. The ranks agree (one all-reduce),
    so that all of them drop it; the backward must still run on every rank, because DDP's gradient
    reduction waits for all of them. The step is reported as a ``warning`` event."""

    def __init__(self, distributed: Distributed, device: torch.device, events: EventLog) -> None:
        self.distributed = distributed
        self.device = device
        self.events = events

    def all_finite(self, iteration: int, losses: dict[str, Tensor], loss: Tensor) -> bool:
        """Whether ``loss`` (the sum of ``losses``) is finite on every rank."""
        finite = self.distributed.all_true(bool(torch.isfinite(loss)), self.device)
        if not finite:
            self.events.emit(
                "warning",
                iteration=iteration,
                message="non-finite loss: step skipped",
                losses={k: finite_or_none(float(v.detach())) for k, v in losses.items()},
            )
        return finite


class ProgressHook:
    """The progress bar after every step; every ``log_period`` steps and at the last a ``progress``
    event (the losses and gradient norm averaged over the steps taken since the previous event and
    over the ranks, learning rate, speed, ETA) and its TensorBoard scalars."""

    def __init__(
        self,
        events: EventLog,
        distributed: Distributed,
        device: torch.device,
        options: TrainOptions,
        dataset_size: int,
        optimizer: torch.optim.Optimizer,
    ) -> None:
        self.events = events
        self.distributed = distributed
        self.device = device
        self.options = options
        self.dataset_size = dataset_size
        self.optimizer = optimizer
        self.images_per_iteration = options.batch_size * distributed.world_size
        self.loss_sums: dict[str, float] = {}
        self.grad_norm_sum: float | None = None
        self.steps_taken = 0
        self.window: list[float] = []  # seconds of the recent iterations, for the ETA
        self.last = 0.0

    def before_train(self, start: int) -> None:
        self.events.start(self.options.iterations, start)
        # an iteration's time runs from the end of the previous one: checkpoints and evaluation count
        self.last = time.perf_counter()

    def after_step(self, step: Step) -> None:
        if not step.skipped:
            for key, value in step.losses.items():
                self.loss_sums[key] = self.loss_sums.get(key, 0.0) + value
            if step.grad_norm is not None:
                self.grad_norm_sum = (self.grad_norm_sum or 0.0) + step.grad_norm
            self.steps_taken += 1
        now = time.perf_counter()
        self.window = (self.window + [now - self.last])[-50:]
        self.last = now
        self.events.advance(step.iteration, step.loss)
        if step.iteration % self.options.log_period == 0 or step.iteration == self.options.iterations:
            self.log(step.iteration)
            self.loss_sums, self.grad_norm_sum, self.steps_taken = {}, None, 0

    def log(self, iteration: int) -> None:
        sums = dict(self.loss_sums)
        if self.grad_norm_sum is not None:
            sums["grad_norm"] = self.grad_norm_sum
        means = self.distributed.mean({k: v / max(self.steps_taken, 1) for k, v in sums.items()}, self.device)
        grad_norm = means.pop("grad_norm", None)
        seconds = sum(self.window) / len(self.window)
        fields = {
            "iteration": iteration,
            "total": self.options.iterations,
            "epoch": math.ceil(iteration * self.images_per_iteration / self.dataset_size),
            # no loss when every step since the last event was skipped
            **({"loss": sum(means.values()), **means} if self.steps_taken else {}),
            **({"grad_norm": grad_norm} if grad_norm is not None else {}),
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds_per_iteration": seconds,
            "images_per_second": self.images_per_iteration / seconds,
            "eta_s": round(seconds * (self.options.iterations - iteration)),
        }
        self.events.emit("progress", **fields)
        self.events.scalars(iteration, {k: v for k, v in fields.items() if k.startswith("loss") or k == "lr"}, "train/")


class CheckpointHook:
    """Every ``checkpoint_period`` steps and at the last, a checkpoint with the random generators of
    every rank, written by rank 0 (a ``checkpoint`` event); after training, the final weights."""

    def __init__(
        self,
        run_dir: Path,
        model: MaskRCNN,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
        scaler: torch.amp.GradScaler,
        options: TrainOptions,
        distributed: Distributed,
        device: torch.device,
        events: EventLog,
    ) -> None:
        self.run_dir = run_dir
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.options = options
        self.distributed = distributed
        self.device = device
        self.events = events
        self.last: Path | None = None  # the newest checkpoint this run wrote

    def after_step(self, step: Step) -> None:
        iteration = step.iteration
        if iteration % self.options.checkpoint_period != 0 and iteration != self.options.iterations:
            return
        rng_states = self.distributed.gather(rng_state(self.device))  # every rank takes part
        if self.distributed.is_main:
            self.last = save_checkpoint(
                self.run_dir,
                iteration,
                self.model,
                self.optimizer,
                self.scheduler,
                self.scaler,
                self.options,
                rng_states,
                self.options.keep_checkpoints,
            )
            self.events.emit("checkpoint", iteration=iteration, path=self.last)

    def after_train(self) -> Path | None:
        """``model_final.safetensors`` (rank 0; None on the others)."""
        if not self.distributed.is_main:
            return None
        return save_weights(self.model, self.run_dir / FINAL_WEIGHTS)


class EvaluationHook:
    """COCO AP on the held-out images (``eval`` events and TensorBoard scalars): before training
    when asked, every ``eval_period`` steps, and after. Rank 0 evaluates while the others wait."""

    def __init__(
        self,
        model: MaskRCNN,
        data: CocoData | None,
        device: torch.device,
        *,
        channels_last: bool,
        amp: bool,
        distributed: Distributed,
        events: EventLog,
        options: TrainOptions,
        before: bool,
    ) -> None:
        self.model = model
        self.data = data
        self.device = device
        self.channels_last = channels_last
        self.amp = amp
        self.distributed = distributed
        self.events = events
        self.period = options.eval_period
        self.iterations = options.iterations
        self.before = before

    def evaluate(self, stage: str, iteration: int) -> dict[str, Any]:
        """The AP by IoU type, as ``model.evaluation.evaluate`` gives it (empty on other ranks, or
        without held-out images)."""
        summary: dict[str, Any] = {}
        if self.data is not None and self.data.images and self.distributed.is_main:
            summary = run_evaluation(self.model, self.data, self.device, self.channels_last, self.amp)
            self.events.emit("eval", stage=stage, iteration=iteration, images=len(self.data.images), **summary)
            self.events.scalars(iteration, _ap_figures(summary), "eval/")
        self.distributed.barrier()
        return summary

    def before_train(self, start: int) -> None:
        if self.before and start == 0:
            self.evaluate("before", 0)

    def after_step(self, step: Step) -> None:
        # the last step's evaluation is after_train's
        if self.period and step.iteration % self.period == 0 and step.iteration != self.iterations:
            self.evaluate("during", step.iteration)

    def after_train(self, iteration: int) -> dict[str, Any]:
        return self.evaluate("after", iteration)


def run_evaluation(
    model: MaskRCNN, data: CocoData, device: torch.device, channels_last: bool, amp: bool
) -> dict[str, Any]:
    """COCO AP of ``model`` on ``data``; the model is back in training mode afterwards. ``amp``:
    float16 autocast, on CUDA only."""
    was_training = model.training
    predictor = Predictor(
        model,
        device=device,
        channels_last=channels_last,
        mixed_precision=amp and device.type == "cuda",
        feature_cache_size=0,
    )
    try:
        return evaluate(predictor, data)
    finally:
        model.train(was_training)


def _ap_figures(summary: dict[str, Any]) -> dict[str, float]:
    """``{"segm/AP": 0.41, ...}``: the summary's figures, without the per-class ones and the missing."""
    return {
        f"{iou_type}/{key}": value
        for iou_type, entry in summary.items()
        for key, value in entry.items()
        if key != "per_class" and value is not None
    }
