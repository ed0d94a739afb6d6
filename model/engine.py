"""The training loop: SGD (or AdamW) with warm-up and step decay, mixed precision on CUDA, gradient
clipping, a guard against non-finite losses, atomic self-describing checkpoints with exact resume,
evaluation on held-out images, and progress as JSON lines. Under ``torchrun`` it trains with
DistributedDataParallel, and only rank 0 writes files and events.

The data order is a function of (seed, iteration) (``model.data.TrainingBatches``), and a
checkpoint holds the model, optimizer, scheduler, gradient scaler and the torch random generators
of every rank, so ``--resume`` continues as if the run had not stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from model.builders import ARCHITECTURES, config_for
from model.config import ModelConfig
from model.data import CocoData, CocoDataset, LabelSpace, TrainingBatches, collate, load_coco
from model.detector import MaskRCNN
from model.errors import InputError

CHECKPOINT_PREFIX = "checkpoint_"
LAST_CHECKPOINT = "last_checkpoint"  # a text file naming the newest checkpoint (Detectron2's habit)
FINAL_WEIGHTS = "model_final.safetensors"
DEFAULT_ARCHITECTURE = "maskrcnn_resnet18_fpn_small"


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


# ---------------------------------------------------------------------------------------------
# events


class EventLog:
    """Progress for machines and people: one JSON object a line on ``stream`` (stdout), a progress
    bar on stderr when that is a terminal, and TensorBoard scalars when tensorboard is installed.
    Silent on ranks other than 0."""

    def __init__(self, stream: IO[str] | None = None, *, enabled: bool = True, tensorboard_dir: Path | None = None,
                 progress_bar: bool | None = None) -> None:  # fmt: skip
        self.stream = stream if stream is not None else sys.stdout
        self.enabled = enabled
        self.tensorboard_dir = tensorboard_dir
        # None: a bar only when stderr is a terminal
        self.progress_bar = progress_bar
        self.bar: Any = None
        self.tensorboard: Any = None

    def start(self, total: int, initial: int = 0) -> None:
        """The progress bar (and TensorBoard writer) of a run of ``total`` iterations."""
        if not self.enabled:
            return
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="it", file=sys.stderr, dynamic_ncols=True,
                        disable=None if self.progress_bar is None else not self.progress_bar)  # fmt: skip
        if self.tensorboard_dir is not None and self.tensorboard is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                pass
            else:
                self.tensorboard = SummaryWriter(str(self.tensorboard_dir))

    def emit(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        line = json.dumps(_finite({"event": event, **fields}), allow_nan=False, default=_json_default)
        if self.bar is not None and not self.bar.disable:
            self.bar.clear()
        print(line, file=self.stream, flush=True)
        if self.bar is not None and not self.bar.disable:
            self.bar.refresh()

    def advance(self, iteration: int, loss: float | None = None) -> None:
        if self.bar is not None and not self.bar.disable:
            self.bar.update(iteration - self.bar.n)
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def scalars(self, iteration: int, values: dict[str, float], prefix: str = "") -> None:
        if self.tensorboard is not None:
            for key, value in values.items():
                if value is not None and math.isfinite(value):
                    self.tensorboard.add_scalar(prefix + key, value, iteration)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Tensor):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return _finite_or_none(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# distributed


@dataclass(frozen=True)
class Distributed:
    """Where this process stands under ``torchrun`` (world size 1 without it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def from_environment() -> Distributed:
        return Distributed(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )

    def device(self, requested: str) -> torch.device:
        """``auto``: this rank's GPU under torchrun (or the GPU), else the CPU; MPS is not used
        for training."""
        if requested == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda", self.local_rank if self.enabled else torch.cuda.current_device())
            return torch.device("cpu")
        device = torch.device(requested)
        if device.type == "cuda" and device.index is None and self.enabled:
            return torch.device("cuda", self.local_rank)
        return device

    def init(self, device: torch.device) -> None:
        if self.enabled and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, values: dict[str, float], device: torch.device) -> dict[str, float]:
        if not self.enabled:
            return values
        tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return dict(zip(values, (tensor / self.world_size).tolist()))

    def all_true(self, flag: bool, device: torch.device) -> bool:
        if not self.enabled:
            return flag
        tensor = torch.tensor([int(flag)], device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
        return bool(tensor.item())

    def gather(self, value: Any) -> list[Any]:
        if not self.enabled:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered


# ---------------------------------------------------------------------------------------------
# model


def training_config(base: ModelConfig, labels: LabelSpace, trainable_backbone_layers: int | None,
                    **overrides: Any) -> ModelConfig:  # fmt: skip
    """``base`` with the data set's classes and keypoint schema (the keypoint head on when the data
    has keypoints, off when it has none) and ``overrides`` (``ModelConfig`` fields, e.g. sizes)."""
    changes: dict[str, Any] = {"class_names": labels.class_names, "keypoint_on": bool(labels.keypoint_names),
                               **overrides}  # fmt: skip
    if labels.keypoint_names:
        flip_map = labels.keypoint_flip_map
        if not flip_map and tuple(base.keypoint_names) == labels.keypoint_names:
            flip_map = base.keypoint_flip_map
        changes.update(keypoint_names=labels.keypoint_names, keypoint_skeleton=labels.keypoint_skeleton,
                       keypoint_flip_map=flip_map)  # fmt: skip
    else:
        changes.update(keypoint_names=(), keypoint_skeleton=(), keypoint_flip_map=())
    if trainable_backbone_layers is not None:
        changes["trainable_backbone_layers"] = trainable_backbone_layers
    return base.replace(**changes)


def build_training_model(weights: str | Path, architecture: str | None, labels: LabelSpace,
                         trainable_backbone_layers: int | None = None, **overrides: Any) -> tuple[MaskRCNN, list[str]]:  # fmt: skip
    """The model to train on data of label space ``labels``, and notes for the log.

    ``weights``: ``"none"`` (random init of ``architecture``), an ImageNet backbone of
    ``model.weights.BACKBONES`` (the ResNet body of ``architecture``, the rest fresh), a registry
    name or a weights file (its architecture; classes and keypoints carried over by name, see
    ``load_transferred``).
    ``overrides``: ``ModelConfig`` fields such as ``min_size`` and ``max_size``.
    """
    from model.weights import BACKBONES, fetch, infer_config, load_backbone, load_transferred, read_weights

    if str(weights) in BACKBONES:
        info = BACKBONES[str(weights)]
        name = architecture or info.architecture
        if name not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
        model = MaskRCNN(training_config(config_for(name), labels, trainable_backbone_layers, **overrides))
        file = fetch(info)
        load_backbone(model, read_weights(file.path)[0])
        return model, [f"{name} with its ResNet body from {file.version}; FPN and heads start fresh"]
    if str(weights) == "none":
        name = architecture or DEFAULT_ARCHITECTURE
        if name not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
        base = config_for(name)
        if trainable_backbone_layers is None:
            # nothing to keep frozen in a random backbone
            trainable_backbone_layers = 5
        model = MaskRCNN(training_config(base, labels, trainable_backbone_layers, **overrides))
        return model, [f"random initialisation of {name}"]

    file = fetch(weights)
    state_dict, saved = read_weights(file.path)
    if file.info is not None:
        source = file.info.config()
        name = file.info.architecture
        if architecture is not None and architecture != name:
            raise ValueError(f"{file.info.name} are weights of {name}, not {architecture}")
    else:
        source = ModelConfig.from_dict(saved) if saved is not None else infer_config(state_dict)
        if architecture is not None:
            expected = config_for(architecture)
            if (expected.backbone_depth, expected.variant, expected.fpn_channels, expected.backbone_norm) != (
                source.backbone_depth, source.variant, source.fpn_channels, source.backbone_norm
            ):
                raise ValueError(f"{file.path} does not hold weights of {architecture}")
    model = MaskRCNN(training_config(source, labels, trainable_backbone_layers, **overrides))
    report = load_transferred(model, state_dict, source)
    model.weights_version = file.version
    return model, [f"starting from {file.version}", *report.lines()]


class RunStopped(RuntimeError):
    """Another process of a ``torchrun`` run ended (its own error says why), so this one stops."""


# What the process-group backends say when a peer process has gone: gloo raises a plain
# RuntimeError, NCCL and the store torch.distributed's own error types.
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "remote worker", "Broken pipe")


def _peer_gone(error: BaseException) -> bool:
    return isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and any(text in str(error) for text in _PEER_GONE))


@dataclass
class TrainingRun:
    """What ``prepare_run`` sets up: the model, the options and the data split, and, when
    resuming, the checkpoint to continue from."""

    model: MaskRCNN
    options: TrainOptions
    train_data: CocoData
    val_data: CocoData
    resume: dict[str, Any] | None
    warnings: list[str]  # about the data
    notes: list[str]  # where the weights came from, what starts fresh


def prepare_run(coco_file: Path | str, image_root: Path | str, run_dir: Path, options: TrainOptions, *,
                weights: str, architecture: str | None = None, epochs: float | None = None,
                resume: bool = False, world_size: int = 1, **overrides: Any) -> TrainingRun:  # fmt: skip
    """Read the data, split it, and build the model to train (or restore the run in ``run_dir``).

    ``options.iterations`` is kept unless ``epochs`` is given (passes over the training images at
    ``options.batch_size * world_size`` images a step). On resume the checkpoint's options and
    model config are used. ``overrides`` are ``ModelConfig`` fields (``min_size``, ``max_size``).

    Raises:
        InputError: naming the data file, an image, the weights or the run folder.
    """
    checkpoint = None
    if resume:
        path = latest_checkpoint(run_dir) if run_dir.is_dir() else None
        if path is None:
            raise InputError(run_dir, "no checkpoint here to resume from")
        checkpoint = load_checkpoint(path)
        options = TrainOptions.from_dict(checkpoint["options"])
    try:
        data = load_coco(coco_file, image_root)
        train_data, val_data = data.split(options.val_fraction, options.seed)
    except InputError:  # naming the COCO file, or an image
        raise
    except ValueError as error:
        raise InputError(coco_file, str(error)) from None
    if not train_data.images:
        raise InputError(coco_file, "no images to train on")

    if checkpoint is not None:
        model = MaskRCNN(ModelConfig.from_dict(checkpoint["config"]))
        if model.config.class_names != data.labels.class_names:
            raise InputError(coco_file, f"its categories {list(data.labels.class_names[1:])} are not those of the run "
                                        f"being resumed {list(model.config.class_names[1:])}")  # fmt: skip
        notes = [f"resuming {run_dir} at iteration {checkpoint['iteration']} of {options.iterations}"]
        return TrainingRun(model, options, train_data, val_data, checkpoint, data.warnings, notes)

    if epochs is not None:
        images_per_step = options.batch_size * world_size
        options = dataclasses.replace(options, iterations=max(1, math.ceil(epochs * len(train_data.images) / images_per_step)))
    torch.manual_seed(options.seed)  # the initialisation of new layers
    try:
        model, notes = build_training_model(weights, architecture, data.labels, options.trainable_backbone_layers,
                                            **overrides)  # fmt: skip
    except FileNotFoundError as error:
        raise InputError(weights, str(error)) from None
    except (ValueError, RuntimeError) as error:  # not weights, another architecture, or not downloadable
        raise InputError(weights, f"cannot start from these weights ({error})") from None
    return TrainingRun(model, options, train_data, val_data, None, data.warnings, notes)


def _parameter_groups(model: nn.Module) -> list[Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(model: nn.Module, options: TrainOptions, world_size: int) -> torch.optim.Optimizer:
    lr = options.base_lr(world_size)
    if options.optimizer == "sgd":
        decay = 1e-4 if options.weight_decay is None else options.weight_decay
        return torch.optim.SGD(_parameter_groups(model), lr=lr, momentum=options.momentum, weight_decay=decay)
    if options.optimizer == "adamw":
        decay = 0.05 if options.weight_decay is None else options.weight_decay
        return torch.optim.AdamW(_parameter_groups(model), lr=lr, weight_decay=decay)
    raise ValueError(f"unknown optimizer {options.optimizer!r}; use sgd or adamw")


# ---------------------------------------------------------------------------------------------
# checkpoints


def _atomic_save(value: Any, path: Path) -> None:
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("wb") as f:
        torch.save(value, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / LAST_CHECKPOINT
    if pointer.is_file():
        path = run_dir / pointer.read_text().strip()
        if path.is_file():
            return path
    found = sorted(run_dir.glob(f"{CHECKPOINT_PREFIX}*.pth"))
    return found[-1] if found else None


def save_checkpoint(run_dir: Path, iteration: int, model: MaskRCNN, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LambdaLR, scaler: torch.amp.GradScaler,
                    options: TrainOptions, rng_states: list[dict[str, Any]], keep: int) -> Path:  # fmt: skip
    """Everything needed to continue: a ``.pth`` that is also a weights file (``model`` and
    ``config``, read by ``model.weights.read_weights``). Written beside and renamed."""
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
    os.replace(pointer, run_dir / LAST_CHECKPOINT)
    if keep > 0:
        for old in sorted(run_dir.glob(f"{CHECKPOINT_PREFIX}*.pth"))[:-keep]:
            old.unlink(missing_ok=True)
    return path


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------------------------
# the loop


@dataclass
class TrainResult:
    weights: Path | None
    checkpoint: Path | None
    iterations: int
    evaluation: dict[str, Any] = field(default_factory=dict)


def run_evaluation(model: MaskRCNN, data: CocoData, device: torch.device, channels_last: bool,
                   amp: bool) -> dict[str, Any]:  # fmt: skip
    """COCO AP of ``model`` on ``data``; the model is back in training mode afterwards."""
    from model.evaluation import evaluate
    from model.predictor import Predictor

    was_training = model.training
    predictor = Predictor(model, device=device, channels_last=channels_last, mixed_precision=amp,
                          feature_cache_size=0)  # fmt: skip
    try:
        return evaluate(predictor, data)
    finally:
        model.train(was_training)


def _ap_figures(summary: dict[str, Any]) -> dict[str, float]:
    return {f"{iou_type}/{key}": value for iou_type, entry in summary.items() for key, value in entry.items()
            if key != "per_class" and value is not None}  # fmt: skip


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
    amp = options.amp if options.amp is not None else device.type == "cuda"
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    channels_last = device.type in ("cuda", "cpu")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device).to(memory_format=memory_format)
    model.train()
    if resume is not None:
        model.load_state_dict(resume["model"])

    train_model: nn.Module = model
    if distributed.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = make_optimizer(model, options, distributed.world_size)
    milestones = tuple(int(round(f * options.iterations)) for f in options.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupMultiStep(options.warmup(), options.warmup_factor, milestones, options.gamma)
    )
    # bfloat16 has float32's exponent range: only float16 needs its gradients scaled
    scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype == torch.float16)
    start = 0
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        start = int(resume["iteration"])
        states = resume["rng"]
        _set_rng_state(states[distributed.rank % len(states)], device)
    else:
        torch.manual_seed(options.seed * 1000 + distributed.rank)

    dataset = CocoDataset(train_data, errors_as_items=True)
    sampler = TrainingBatches(
        len(dataset), options.batch_size, seed=options.seed, start_iteration=start, rank=distributed.rank,
        world_size=distributed.world_size, flip_probability=options.flip_probability,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=options.num_workers,
        pin_memory=device.type == "cuda", persistent_workers=options.num_workers > 0,
        # its own generator: drawing the workers' base seed from the global one would shift the
        # random stream of a resumed run against an uninterrupted one
        generator=torch.Generator().manual_seed(options.seed),
    )  # fmt: skip

    def evaluation(stage: str, iteration: int) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        if val_data is not None and val_data.images and distributed.is_main:
            summary = run_evaluation(model, val_data, device, channels_last, amp and device.type == "cuda")
            events.emit("eval", stage=stage, iteration=iteration, images=len(val_data.images), **summary)
            events.scalars(iteration, _ap_figures(summary), "eval/")
        distributed.barrier()
        return summary

    if evaluate_before and start == 0:
        evaluation("before", 0)
    events.start(options.iterations, start)

    images_per_iteration = options.batch_size * distributed.world_size
    checkpoint: Path | None = None
    iteration = start
    window: list[float] = []  # recent seconds per iteration, for the ETA
    sums: dict[str, float] = {}
    count = 0
    last = time.perf_counter()
    data = iter(loader)
    try:
        for iteration in range(start + 1, options.iterations + 1):
            batch = next(data)
            if isinstance(batch, InputError):  # carried out of the data-loader worker by ``collate``
                raise batch
            images, targets = batch
            images = [image.to(device, non_blocking=True).float().div_(255) for image in images]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                losses = train_model(images, targets)
            loss = sum(losses.values())
            finite = distributed.all_true(bool(torch.isfinite(loss)), device)
            # backward even when skipping, so that every rank takes part in the gradient reduction
            scaler.scale(loss).backward()
            if finite:
                if options.clip_grad_norm:
                    scaler.unscale_(optimizer)
                    norm = nn.utils.clip_grad_norm_(_parameter_groups(model), options.clip_grad_norm)
                    sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(norm)
                scaler.step(optimizer)
                scaler.update()
            else:
                events.emit("warning", iteration=iteration, message="non-finite loss: step skipped",
                            losses={k: _finite_or_none(float(v.detach())) for k, v in losses.items()})  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()

            if finite:
                for key, value in losses.items():
                    sums[key] = sums.get(key, 0.0) + float(value.detach())
                count += 1
            now = time.perf_counter()
            window = (window + [now - last])[-50:]
            last = now
            events.advance(iteration, float(loss.detach()) if finite else None)

            if iteration % options.log_period == 0 or iteration == options.iterations:
                means = distributed.mean({k: v / max(count, 1) for k, v in sums.items()}, device)
                grad_norm = means.pop("grad_norm", None)
                seconds = sum(window) / len(window)
                fields = {
                    "iteration": iteration,
                    "total": options.iterations,
                    "epoch": math.ceil(iteration * images_per_iteration / len(dataset)),
                    # no loss when every step since the last event was skipped
                    **({"loss": sum(means.values()), **means} if count else {}),
                    **({"grad_norm": grad_norm} if grad_norm is not None else {}),
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds_per_iteration": seconds,
                    "images_per_second": images_per_iteration / seconds,
                    "eta_s": round(seconds * (options.iterations - iteration)),
                }  # fmt: skip
                events.emit("progress", **fields)
                events.scalars(iteration, {k: v for k, v in fields.items() if k.startswith("loss") or k == "lr"}, "train/")
                sums, count = {}, 0

            final = iteration == options.iterations
            if iteration % options.checkpoint_period == 0 or final:
                rng_states = distributed.gather(_rng_state(device))
                if distributed.is_main:
                    checkpoint = save_checkpoint(run_dir, iteration, model, optimizer, scheduler, scaler, options,
                                                 rng_states, options.keep_checkpoints)  # fmt: skip
                    events.emit("checkpoint", iteration=iteration, path=checkpoint)
            if options.eval_period and iteration % options.eval_period == 0 and not final:
                evaluation("during", iteration)
    finally:
        del data, loader

    summary = evaluation("after", iteration)
    weights = None
    if distributed.is_main:
        from model.weights import save_weights

        weights = save_weights(model, run_dir / FINAL_WEIGHTS)
    return TrainResult(weights=weights, checkpoint=checkpoint, iterations=iteration, evaluation=summary)


# ---------------------------------------------------------------------------------------------
# the command


def run_training(coco_file: Path | str, image_root: Path | str, run_dir: Path | str, options: TrainOptions, *,
                 weights: str, architecture: str | None = None, iterations: int | None = None,
                 epochs: float | None = None, min_size: Sequence[int] | None = None, max_size: int | None = None,
                 resume: bool = False, device: str = "auto") -> TrainResult:  # fmt: skip
    """``main.py train``: this process's part of a run (one rank under ``torchrun``), from the COCO
    file to ``run_dir/model_final.safetensors``. Events go to stdout (rank 0 only) and end in
    ``done`` or ``error``; notes for people go to stderr.

    The run is ``iterations`` steps when given, else ``epochs`` passes over the training images;
    ``resume`` continues the run in ``run_dir`` with that run's settings. ``min_size``: one shorter
    image side, or several drawn per image in training (default: the architecture's).

    Raises:
        InputError: naming the file that cannot be used (the COCO file, an image, the weights, the
            run folder), found before training or during it; checkpoints already written stay.
        RunStopped: under torchrun, another rank ended first.
    """
    distributed = Distributed.from_environment()
    run_dir = Path(run_dir)
    events = EventLog(enabled=distributed.is_main, tensorboard_dir=run_dir / "tensorboard")
    started = time.monotonic()
    if iterations:
        options, epochs = dataclasses.replace(options, iterations=iterations), None
    overrides: dict[str, Any] = {}
    if min_size:
        overrides["min_size"] = min_size[0] if len(min_size) == 1 else tuple(min_size)
    if max_size:
        overrides["max_size"] = max_size
    try:
        try:
            run = prepare_run(coco_file, image_root, run_dir, options, weights=weights, architecture=architecture,
                              epochs=epochs, resume=resume, world_size=distributed.world_size, **overrides)  # fmt: skip
            chosen = distributed.device(device)
            distributed.init(chosen)
            print(f"rank {distributed.rank}/{distributed.world_size}: {len(run.train_data.images)} training images, "
                  f"{len(run.val_data.images)} held out, {run.options.iterations} iterations of "
                  f"{run.options.batch_size} images on {chosen}", file=sys.stderr)  # fmt: skip
            if distributed.is_main:
                for line in [f"warning: {w}" for w in run.warnings] + run.notes:
                    print(line, file=sys.stderr)
            # AP before training says something only of weights that were trained
            result = train(run.model, run.train_data, run.val_data, run_dir, run.options, device=chosen,
                           distributed=distributed, events=events, resume=run.resume,
                           evaluate_before=weights != "none")  # fmt: skip
        except InputError:  # an image that failed to decode: in training, or evaluation
            raise
        except Exception as error:
            if distributed.enabled and _peer_gone(error):
                raise RunStopped(f"rank {distributed.rank}: stopped because another process of the run ended "
                                 "(its error says why)") from None
            raise
        seconds = time.monotonic() - started
        events.emit("done", path=result.weights, checkpoint=result.checkpoint, iterations=result.iterations,
                    elapsed_s=round(seconds, 1), **result.evaluation)  # fmt: skip
        if distributed.is_main:  # for a person at a terminal: where the model went and how it scores
            took = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
            print(f"done in {took}: {result.weights}", file=sys.stderr)
            if result.evaluation:
                from model.evaluation import format_summary

                print(f"AP on the {len(run.val_data.images)} held-out image(s):\n{format_summary(result.evaluation)}",
                      file=sys.stderr)
        return result
    except Exception as error:
        events.emit("error", message=str(error) if isinstance(error, (InputError, RunStopped))
                    else f"{type(error).__name__}: {error}")
        raise
    finally:
        events.close()
        distributed.close()
