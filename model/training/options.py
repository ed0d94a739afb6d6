"""How to train: the options a run is made with (stored in every checkpoint), the learning-rate
schedule and the optimizer they describe."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn


@dataclass
class TrainOptions:
    """How to train; stored in every checkpoint. Learning rate and warm-up default from the batch
    size and run length when left ``None``."""

    iterations: int = 1000
    batch_size: int = 2  # images per process and step
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float | None = None  # SGD: 0.02 per 16 images (linear scaling); AdamW: 1e-4 per 16 images
    momentum: float = 0.9
    weight_decay: float | None = None  # SGD 1e-4, AdamW 0.05
    warmup_iterations: int | None = None  # min(1000, iterations // 10)
    warmup_factor: float = 0.001
    # decay points as fractions of the run (Detectron2's 1x schedule: 60k and 80k of 90k)
    steps: tuple[float, ...] = (2 / 3, 8 / 9)
    gamma: float = 0.1
    clip_grad_norm: float | None = None
    # mixed precision: float16 with a gradient scaler on CUDA (None: on), bfloat16 on the CPU
    # (None: off; worth it on CPUs with native bfloat16, e.g. AVX512-BF16 or AMX)
    amp: bool | None = None
    trainable_backbone_layers: int | None = None  # None: the architecture's
    checkpoint_period: int = 500
    keep_checkpoints: int = 2
    eval_period: int = 0  # 0: evaluate only before and after
    log_period: int = 20
    val_fraction: float = 0.1
    seed: int = 0
    num_workers: int = 1
    flip_probability: float = 0.5

    def base_lr(self, world_size: int) -> float:
        if self.lr is not None:
            return self.lr
        per_image = (0.02 if self.optimizer == "sgd" else 1e-4) / 16
        return per_image * self.batch_size * world_size

    def warmup(self) -> int:
        return self.warmup_iterations if self.warmup_iterations is not None else min(1000, self.iterations // 10)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
        return cls(**values)


@dataclass
class WarmupMultiStep:
    """Learning-rate factor at an iteration: linear warm-up from ``warmup_factor``, then times
    ``gamma`` at each of ``milestones`` (iterations)."""

    warmup: int
    warmup_factor: float
    milestones: tuple[int, ...]
    gamma: float

    def __call__(self, iteration: int) -> float:
        factor = self.gamma ** sum(iteration >= m for m in self.milestones)
        if iteration < self.warmup:
            alpha = iteration / self.warmup
            factor *= self.warmup_factor * (1 - alpha) + alpha
        return factor


def trainable_parameters(model: nn.Module) -> list[Tensor]:
    """The parameters training updates (and clips together): those not frozen."""
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(model: nn.Module, options: TrainOptions, world_size: int) -> torch.optim.Optimizer:
    lr = options.base_lr(world_size)
    if options.optimizer == "sgd":
        decay = 1e-4 if options.weight_decay is None else options.weight_decay
        return torch.optim.SGD(trainable_parameters(model), lr=lr, momentum=options.momentum, weight_decay=decay)
    if options.optimizer == "adamw":
        decay = 0.05 if options.weight_decay is None else options.weight_decay
        return torch.optim.AdamW(trainable_parameters(model), lr=lr, weight_decay=decay)
    raise ValueError(f"unknown optimizer {options.optimizer!r}; use sgd or adamw")


def make_scheduler(optimizer: torch.optim.Optimizer, options: TrainOptions) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate of ``options``: warm-up, then decay at ``options.steps`` (fractions of the run)."""
    milestones = tuple(round(f * options.iterations) for f in options.steps)
    schedule = WarmupMultiStep(options.warmup(), options.warmup_factor, milestones, options.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
