"""The training loop: SGD (or AdamW) with warm-up and step decay, mixed precision on CUDA, gradient
clipping, a guard against non-finite losses, atomic self-describing checkpoints with exact resume,
evaluation on held-out images, and progress as JSON lines. Under ``torchrun`` it trains with
DistributedDataParallel, and only rank 0 writes files and events.

One step (``Trainer.run_step``) is data, forward, losses, backward, optimizer step; everything else
is a hook (``model.training.hooks``) that ``train`` calls around the steps.

The data order is a function of (seed, iteration) (``model.data.TrainingBatches``), and a
checkpoint holds the model, optimizer, scheduler, gradient scaler and the torch random generators
of every rank, so a resumed run continues as if it had not stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.data import CocoData, CocoDataset, TrainingBatches, collate
from model.detector import MaskRCNN
from model.errors import InputError
from model.precision import training_autocast
from model.training.checkpoint import restore_training_state
from model.training.comm import Distributed
from model.training.events import EventLog
from model.training.hooks import CheckpointHook, EvaluationHook, NonFiniteGuard, ProgressHook, Step
from model.training.options import TrainOptions, make_optimizer, make_scheduler, trainable_parameters


@dataclass
class TrainResult:
    """What a run leaves: its files, how far it went, how well the model does on the held-out images."""

    weights: Path | None  # model_final.safetensors (rank 0; None on the other ranks)
    checkpoint: Path | None  # the last checkpoint this run wrote (rank 0)
    iterations: int
    evaluation: dict[str, Any] = field(default_factory=dict)  # the AP after training, by IoU type (rank 0)


@dataclass
class Trainer:
    """One training step and what it changes: the model, its optimizer, the learning-rate
    schedule and the gradient scaler."""

    model: nn.Module  # the DistributedDataParallel wrapper under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    guard: NonFiniteGuard
    device: torch.device
    amp: bool
    amp_dtype: torch.dtype
    clip_grad_norm: float | None

    def run_step(self, iteration: int, batch: Any) -> Step:
        """Train on one ``batch`` of the data loader: images (uint8, (3, H, W)) and their targets.

        Raises:
            InputError: naming an image of the batch that could not be decoded.
        """
        if isinstance(batch, InputError):  # carried out of the data-loader worker by ``collate``
            raise batch
        images, targets = batch
        images = [image.to(self.device, non_blocking=True).float().div_(255) for image in images]
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            losses = self.model(images, targets)
        loss = sum(losses.values())
        finite = self.guard.all_finite(iteration, losses, loss)
        # backward even when skipping, so that every rank takes part in the gradient reduction
        self.scaler.scale(loss).backward()
        grad_norm = None
        if finite:
            if self.clip_grad_norm:
                self.scaler.unscale_(self.optimizer)
                grad_norm = float(nn.utils.clip_grad_norm_(trainable_parameters(self.model), self.clip_grad_norm))
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if not finite:
            return Step(iteration, {}, None, None)
        return Step(iteration, {k: float(v.detach()) for k, v in losses.items()}, float(loss.detach()), grad_norm)


def train(
    model: MaskRCNN,
    train_data: CocoData,
    val_data: CocoData | None,
    run_dir: Path,
    options: TrainOptions,
    *,
    device: torch.device,
    distributed: Distributed = Distributed(),
    events: EventLog | None = None,
    resume: dict[str, Any] | None = None,
    evaluate_before: bool = True,
) -> TrainResult:
    """Train ``model`` on ``train_data`` for ``options.iterations`` steps (per process batches of
    ``options.batch_size``), writing checkpoints and the final weights to ``run_dir`` (rank 0).

    ``resume`` is a loaded checkpoint: the model, optimizer, scheduler, scaler, iteration and
    random generators continue from it. ``events`` receives ``progress``, ``eval``,
    ``checkpoint`` and ``warning``.

    Raises:
        InputError: naming a training image that turned out unusable when it was decoded (in a
            data-loader worker or not); the checkpoints written before stay.
    """
    events = events or EventLog(enabled=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    amp = options.amp if options.amp is not None else training_autocast(device, model.config.backbone_depth)
    channels_last = device.type in ("cuda", "cpu")
    trainer, start = _trainer(model, options, resume, device, distributed, events, amp, channels_last)
    loader = _data_loader(train_data, options, start, distributed, device)

    evaluation = EvaluationHook(
        model,
        val_data,
        device,
        channels_last=channels_last,
        amp=amp,
        distributed=distributed,
        events=events,
        options=options,
        before=evaluate_before,
    )
    progress = ProgressHook(events, distributed, device, options, len(loader.dataset), trainer.optimizer)
    checkpoints = CheckpointHook(
        run_dir, model, trainer.optimizer, trainer.scheduler, trainer.scaler, options, distributed, device, events
    )
    # evaluation first: the progress clock starts after it
    evaluation.before_train(start)
    progress.before_train(start)
    iteration = start
    data = iter(loader)
    try:
        for iteration in range(start + 1, options.iterations + 1):
            step = trainer.run_step(iteration, next(data))
            # in this order: a checkpoint of a step is written before it is evaluated
            progress.after_step(step)
            checkpoints.after_step(step)
            evaluation.after_step(step)
    finally:
        del data, loader  # the data-loader workers end here, also when a step raised
    summary = evaluation.after_train(iteration)
    weights = checkpoints.after_train()
    return TrainResult(weights=weights, checkpoint=checkpoints.last, iterations=iteration, evaluation=summary)


def _trainer(
    model: MaskRCNN,
    options: TrainOptions,
    resume: dict[str, Any] | None,
    device: torch.device,
    distributed: Distributed,
    events: EventLog,
    amp: bool,
    channels_last: bool,
) -> tuple[Trainer, int]:
    """``model`` on ``device`` in training mode (wrapped for DDP under torchrun) with its optimizer,
    schedule and gradient scaler, restored from ``resume`` or freshly seeded; and the iteration
    to start after."""
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    model.to(device).to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    model.train()
    if resume is not None:
        model.load_state_dict(resume["model"])
    wrapped: nn.Module = model
    if distributed.enabled:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = make_optimizer(model, options, distributed.world_size)
    scheduler = make_scheduler(optimizer, options)
    # bfloat16 has float32's exponent range: only float16 needs its gradients scaled
    scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype == torch.float16)
    if resume is not None:
        start = restore_training_state(resume, optimizer, scheduler, scaler, distributed.rank, device)
    else:
        start = 0
        torch.manual_seed(options.seed * 1000 + distributed.rank)
    guard = NonFiniteGuard(distributed, device, events)
    trainer = Trainer(wrapped, optimizer, scheduler, scaler, guard, device, amp, amp_dtype, options.clip_grad_norm)
    return trainer, start


def _data_loader(
    data: CocoData, options: TrainOptions, start: int, distributed: Distributed, device: torch.device
) -> torch.utils.data.DataLoader:
    """This rank's batches from iteration ``start`` on; an image that fails to decode comes as its
    ``InputError`` in place of the batch."""
    dataset = CocoDataset(data, errors_as_items=True)
    sampler = TrainingBatches(
        len(dataset),
        options.batch_size,
        seed=options.seed,
        start_iteration=start,
        rank=distributed.rank,
        world_size=distributed.world_size,
        flip_probability=options.flip_probability,
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=options.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=options.num_workers > 0,
        # its own generator: drawing the workers' base seed from the global one would shift the
        # random stream of a resumed run against an uninterrupted one
        generator=torch.Generator().manual_seed(options.seed),
    )
