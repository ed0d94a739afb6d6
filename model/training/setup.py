"""What a run trains: the model (from a weights file or registry name, an ImageNet backbone, or
random initialisation) fitted to the data set's categories and keypoints, the data split, and on
resume the checkpoint and options of the run being continued."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model.builders import config_for
from model.config import ModelConfig
from model.data import CocoData, LabelSpace, load_coco
from model.detector import MaskRCNN
from model.errors import InputError
from model.training.checkpoint import latest_checkpoint, load_checkpoint
from model.training.options import TrainOptions
from model.weights.download import fetch
from model.weights.formats import read_weights
from model.weights.registry import BACKBONES, COMBINED
from model.weights.resolve import resolve_joined, resolve_weights
from model.weights.transfer import load_backbone, load_transferred

DEFAULT_ARCHITECTURE = "maskrcnn_resnet18_fpn_small"
# Mask R-CNN's standard input (the COCO models' shorter side): fine-tuning on larger images does not
# scale a model's input past it, so that proposals on a CPU stay within a few times the model's cost
LARGEST_IMAGE_SCALE = 800


def sizes_at_image_scale(config: ModelConfig, shorter_sides: Sequence[int]) -> dict[str, Any]:
    """``min_size`` and ``max_size`` that fine-tune ``config``'s model at the scale of the images it
    learns from: its own training sizes times (the images' median shorter side, at most
    ``LARGEST_IMAGE_SCALE``) / (its largest size). Empty when its sizes reach the images already:
    it is never scaled down (a COCO model upsamples small images, as it learned to).

    Why: a model whose input is smaller than the images shrinks their objects, the small ones below
    what it can outline. The demo model (320 px) shrinks 480 px images' 19-96 px shapes to 13-64 px;
    fine-tuned at 480 px it labels held-out images with a fifth fewer actions than fine-tuned at its
    own size (docs/decisions/0013-learning-loop.md)."""
    sizes = config.min_size if isinstance(config.min_size, tuple) else (config.min_size,)
    if not shorter_sides:
        return {}
    target = min(sorted(shorter_sides)[len(shorter_sides) // 2], LARGEST_IMAGE_SCALE)
    if target <= max(sizes):
        return {}
    factor = target / max(sizes)
    scaled = tuple(round(size * factor) for size in sizes)
    return {"min_size": scaled if len(scaled) > 1 else scaled[0], "max_size": round(config.max_size * factor)}


def training_config(
    base: ModelConfig, labels: LabelSpace, trainable_backbone_layers: int | None, **overrides: Any
) -> ModelConfig:
    """``base`` with the data set's classes and keypoint schema (the keypoint head on when the data
    has keypoints, off when it has none) and ``overrides`` (``ModelConfig`` fields, e.g. sizes)."""
    changes: dict[str, Any] = {
        "class_names": labels.class_names,
        "keypoint_on": bool(labels.keypoint_names),
        **overrides,
    }
    if labels.keypoint_names:
        flip_map = labels.keypoint_flip_map
        if not flip_map and tuple(base.keypoint_names) == labels.keypoint_names:
            flip_map = base.keypoint_flip_map
        changes.update(
            keypoint_names=labels.keypoint_names, keypoint_skeleton=labels.keypoint_skeleton, keypoint_flip_map=flip_map
        )
    else:
        changes.update(keypoint_names=(), keypoint_skeleton=(), keypoint_flip_map=())
    if trainable_backbone_layers is not None:
        changes["trainable_backbone_layers"] = trainable_backbone_layers
    return base.replace(**changes)


def build_training_model(
    weights: str | Path,
    architecture: str | None,
    labels: LabelSpace,
    trainable_backbone_layers: int | None = None,
    image_sides: Sequence[int] = (),
    **overrides: Any,
) -> tuple[MaskRCNN, list[str]]:
    """The model to train on data of label space ``labels``, and notes for the log.

    ``weights``: ``"none"`` (random init of ``architecture``), an ImageNet backbone of
    ``model.weights.registry.BACKBONES`` (the ResNet body of ``architecture``, the rest fresh), a registry
    name or a weights file (its architecture; classes and keypoints carried over by name, see
    ``load_transferred``), or a combined registry name (``COMBINED``: one network, the mask
    network's with the keypoint network's keypoint head, ``resolve_joined``; then as a file).
    ``overrides``: ``ModelConfig`` fields such as ``min_size`` and ``max_size``; without those, a
    model fine-tuned from weights trains at the scale of images whose shorter sides are
    ``image_sides`` (``sizes_at_image_scale``).
    """
    if str(weights) in BACKBONES:
        info = BACKBONES[str(weights)]
        name = architecture or info.architecture
        model = MaskRCNN(training_config(config_for(name), labels, trainable_backbone_layers, **overrides))
        file = fetch(info)
        load_backbone(model, read_weights(file.path)[0])
        return model, [f"{name} with its ResNet body from {file.version}; FPN and heads start fresh"]
    if str(weights) == "none":
        name = architecture or DEFAULT_ARCHITECTURE
        if trainable_backbone_layers is None:
            # nothing to keep frozen in a random backbone
            trainable_backbone_layers = 5
        base, notes = config_for(name), [f"random initialisation of {name}"]
        if base.backbone_norm == "frozen_bn" and "backbone_norm" not in overrides:
            # frozen batch norm is the identity at random init, so nothing normalises the body and a
            # ResNet-50's activations overflow within a few steps (every loss non-finite from step 4
            # on 8 synthetic images); GroupNorm trains from scratch (Wu & He, 2018)
            overrides["backbone_norm"] = "gn"
            notes.append("its frozen batch norms cannot train from random weights: GroupNorm in the body instead")
        model = MaskRCNN(training_config(base, labels, trainable_backbone_layers, **overrides))
        return model, notes

    if str(weights) in COMBINED:
        # one network of the pair: the mask network with the keypoint network's keypoint head
        combined = COMBINED[str(weights)]
        joined = resolve_joined(combined.masks, combined.keypoints, name=combined.name, architecture=architecture)
        state_dict, source, version = joined.state_dict, joined.config, joined.version
        start = (
            f"starting from {version}: backbone, RPN, box and mask heads of {joined.masks.version}, "
            f"keypoint head of {joined.keypoints.version} (on the other backbone: fine-tuning fits it)"
        )
    else:
        resolved = resolve_weights(weights, architecture)
        state_dict, source, version = resolved.state_dict, resolved.config, resolved.version
        start = f"starting from {version}"
    chosen = "min_size" in overrides or "max_size" in overrides
    scale = {} if chosen else sizes_at_image_scale(source, image_sides)
    model = MaskRCNN(training_config(source, labels, trainable_backbone_layers, **scale, **overrides))
    report = load_transferred(model, state_dict, source)
    model.weights_version = version
    notes = [start, *report.lines()]
    if scale:
        notes.append(
            f"training at the images' scale: shorter side {_sizes_text(scale['min_size'])} px, longer at most "
            f"{scale['max_size']} (the model's: {_sizes_text(source.min_size)}, {source.max_size})"
        )
    return model, notes


def _sizes_text(sizes: int | tuple[int, ...]) -> str:
    """``"336-480"`` for training sizes, ``"480"`` for one."""
    return f"{min(sizes)}-{max(sizes)}" if isinstance(sizes, tuple) else str(sizes)


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

    def describe(self, device: torch.device) -> str:
        """``"40 training images, 4 held out, 500 iterations of 2 images on cuda:0"``."""
        return (
            f"{len(self.train_data.images)} training images, {len(self.val_data.images)} held out, "
            f"{self.options.iterations} iterations of {self.options.batch_size} images on {device}"
        )


def prepare_run(
    coco_file: Path | str,
    image_root: Path | str,
    run_dir: Path,
    options: TrainOptions,
    *,
    weights: str,
    architecture: str | None = None,
    iterations: int | None = None,
    epochs: float | None = None,
    min_size: Sequence[int] | None = None,
    max_size: int | None = None,
    resume: bool = False,
    world_size: int = 1,
) -> TrainingRun:
    """Read the data, split it, and build the model to train (or restore the run in ``run_dir``).

    The run is ``iterations`` steps when given, else ``epochs`` passes over the training images
    (at ``options.batch_size * world_size`` images a step), else ``options.iterations``.
    ``min_size``: one shorter image side, or several drawn per image in training, and
    ``max_size``: the longer side's limit (default: the architecture's). On resume the
    checkpoint's options and model config are used.

    Raises:
        InputError: naming the data file, an image, the weights or the run folder.
    """
    if iterations:
        options, epochs = dataclasses.replace(options, iterations=iterations), None
    overrides: dict[str, Any] = {}
    if min_size:
        overrides["min_size"] = min_size[0] if len(min_size) == 1 else tuple(min_size)
    if max_size:
        overrides["max_size"] = max_size
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
            raise InputError(
                coco_file,
                f"its categories {list(data.labels.class_names[1:])} are not those of the run "
                f"being resumed {list(model.config.class_names[1:])}",
            )
        notes = [f"resuming {run_dir} at iteration {checkpoint['iteration']} of {options.iterations}"]
        return TrainingRun(model, options, train_data, val_data, checkpoint, data.warnings, notes)

    if epochs is not None:
        images_per_step = options.batch_size * world_size
        options = dataclasses.replace(
            options, iterations=max(1, math.ceil(epochs * len(train_data.images) / images_per_step))
        )
    torch.manual_seed(options.seed)  # the initialisation of new layers
    try:
        image_sides = [min(image.width, image.height) for image in train_data.images]
        model, notes = build_training_model(
            weights, architecture, data.labels, options.trainable_backbone_layers, image_sides, **overrides
        )
    except FileNotFoundError as error:
        raise InputError(weights, str(error)) from None
    except (ValueError, RuntimeError) as error:  # not weights, another architecture, or not downloadable
        raise InputError(weights, f"cannot start from these weights ({error})") from None
    return TrainingRun(model, options, train_data, val_data, None, data.warnings, notes)
