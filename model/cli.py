"""The command lines of the model's own jobs, ``main.py train`` and ``main.py evaluate``: their
arguments (most are ``TrainOptions`` fields, declared here beside the call that takes them) and
what each runs. ``main.py`` adds them to its parser; they need no project and no Qt.

Importing this module imports no torch: ``main.py info`` builds the same parser and starts fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from model.errors import InputError

DEVICE_HELP = "auto (CUDA, then MPS, then CPU; under torchrun each process its GPU), cpu, cuda, cuda:1, mps"
# model.precision.PRECISIONS as a person picks them (no torch import here; fp16 is auto's on CUDA)
PRECISION_CHOICES = ("auto", "fp32", "bf16")
PRECISION_HELP = (
    "auto (default): bfloat16 on a CPU with AMX or AVX512-BF16, float16 on CUDA, else float32; "
    "fp32; bf16 (runs anywhere, slower than fp32 on CPUs without native bfloat16)"
)


def add_model_arguments(parser: argparse.ArgumentParser, weights_help: str) -> None:
    """``--weights``, ``--device`` and ``--precision``, as every command that runs a model takes them."""
    parser.add_argument("--weights", metavar="NAME|PATH", help=f"{weights_help} (default: the bundled demo model)")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto", help=PRECISION_HELP)


def load_predictor(weights: str | None, device: Any, **options: Any) -> Any:
    """A ``Predictor`` for ``weights`` (None: ``default_weights()``; a combined registry entry: a
    ``PersonPosePredictor``), with weights problems as one-line ``InputError``s naming the file or URL."""
    from model.person_pose import open_predictor
    from model.weights.download import WeightsHashError, WeightsUnavailableError
    from model.weights.registry import default_weights

    weights = weights or default_weights()
    try:
        return open_predictor(weights, device=device, **options)
    except (WeightsUnavailableError, WeightsHashError, FileNotFoundError) as error:
        raise InputError(weights, str(error)) from None
    except KeyError as error:
        raise InputError(weights, str(error.args[0])) from None
    except (ValueError, RuntimeError) as error:  # not a weights file, or another architecture
        raise InputError(weights, f"cannot load these weights ({error})") from None


def sizes_list(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 640 or 640,672,704, got {text!r}") from None
    if not all(size > 0 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return sizes


def _coco_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("coco", metavar="COCO.json", help="COCO instances or keypoints file (e.g. from 'export')")
    parser.add_argument(
        "--images", required=True, metavar="DIR", help="folder that the file's file_name entries are in"
    )


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    _coco_data(parser)
    add = parser.add_argument
    add(
        "--out",
        required=True,
        metavar="RUN_DIR",
        help="folder for checkpoints and the final weights (model_final.safetensors)",
    )
    add(
        "--weights",
        metavar="NAME|PATH|none",
        help="start from registry weights (a COCO model, or an ImageNet backbone such as resnet50.IMAGENET1K_V1 for "
        "--arch; masks_and_keypoints_resnet50_fpn.COCO_V1: one network, the mask model with the keypoint "
        "model's keypoint head), a .pth / .safetensors file, or 'none' (random init of --arch); classes and "
        "keypoints are matched by name (default: the bundled demo model)",
    )
    add("--arch", metavar="NAME", help="architecture for --weights none (default maskrcnn_resnet18_fpn_small)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument(
        "--epochs", type=float, default=12, metavar="N", help="passes over the training images (default 12)"
    )
    length.add_argument("--iters", type=int, metavar="N", help="optimizer steps (instead of --epochs)")
    add("--batch-size", type=int, default=2, metavar="B", help="images per step and process (default 2)")
    add(
        "--lr",
        type=float,
        metavar="LR",
        help="base learning rate (default: 0.02 x total batch / 16 for SGD, 1e-4 x batch / 16 for AdamW)",
    )
    add("--optimizer", choices=("sgd", "adamw"), default="sgd", help="default sgd (momentum 0.9)")
    add(
        "--val-fraction",
        type=float,
        default=0.1,
        metavar="F",
        help="fraction of the images held out to report AP before and after (default 0.1; 0: none)",
    )
    add(
        "--trainable-layers",
        type=int,
        choices=range(6),
        metavar="N",
        help="ResNet stages trained, counted from the top (0-5; default: the architecture's, 5 for --weights none)",
    )
    add(
        "--min-size",
        type=sizes_list,
        metavar="N[,N...]",
        help="shorter image side in training, one drawn per image (inference uses the last; default: the "
        "architecture's)",
    )
    add("--max-size", type=int, metavar="N", help="longest image side (default: the architecture's)")
    add("--clip-grad", type=float, metavar="NORM", help="clip the gradient norm to this")
    add("--checkpoint-period", type=int, default=500, metavar="N", help="checkpoint every N steps (default 500)")
    add("--eval-period", type=int, default=0, metavar="N", help="also evaluate every N steps")
    add("--seed", type=int, default=0, help="seed of the split, the data order and the initialisation")
    add("--log-period", type=int, default=20, metavar="N", help="a progress event every N steps (default 20)")
    add("--workers", type=int, default=1, metavar="N", help="data-loading processes (default 1)")
    amp = parser.add_mutually_exclusive_group()
    amp.add_argument(
        "--amp",
        action="store_true",
        default=None,
        help="mixed precision: float16 on CUDA, bfloat16 on the CPU (default: on CUDA, and on a CPU with native "
        "bfloat16, e.g. AVX512-BF16 or AMX, for ResNet-50 and deeper, where it is faster)",
    )
    amp.add_argument("--no-amp", dest="amp", action="store_false", default=None, help="no mixed precision")
    add("--device", default="auto", help="auto (CUDA, else CPU; under torchrun each rank its GPU), cpu, cuda, cuda:1")
    add(
        "--resume",
        action="store_true",
        help="continue the run in RUN_DIR from its last checkpoint, with that run's settings",
    )


def cmd_train(args: argparse.Namespace) -> int:
    """``main.py train``: progress as JSON lines on stdout; bad input raises ``InputError``."""
    from model.training.comm import RunStopped
    from model.training.options import TrainOptions
    from model.training.run import run_training
    from model.weights.registry import default_weights

    options = TrainOptions(
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        val_fraction=args.val_fraction,
        seed=args.seed,
        num_workers=args.workers,
        checkpoint_period=args.checkpoint_period,
        eval_period=args.eval_period,
        clip_grad_norm=args.clip_grad,
        amp=args.amp,
        trainable_backbone_layers=args.trainable_layers,
        log_period=args.log_period,
    )
    try:
        run_training(
            args.coco,
            args.images,
            Path(args.out),
            options,
            weights=args.weights or default_weights(),
            architecture=args.arch,
            iterations=args.iters,
            epochs=args.epochs,
            min_size=args.min_size,
            max_size=args.max_size,
            resume=args.resume,
            device=args.device,
        )
    except RunStopped as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    _coco_data(parser)
    add_model_arguments(parser, "registry name or weights file, e.g. RUN_DIR/model_final.safetensors")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``main.py evaluate``: the AP table, and with ``--json`` one JSON object as the last line."""
    from tqdm import tqdm

    from model.data import load_coco
    from model.evaluation import evaluate, format_summary

    data = load_coco(args.coco, args.images)  # InputError names the COCO file, or an image
    for warning in data.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    predictor = load_predictor(args.weights, args.device, precision=args.precision, feature_cache_size=0)
    with tqdm(total=len(data.images), unit="img", file=sys.stderr, disable=None, dynamic_ncols=True) as bar:
        summary = evaluate(predictor, data, on_image=lambda count: bar.update())
    print(f"{predictor.model_version} ({predictor.execution}) on {len(data.images)} images of {args.coco}")
    print(format_summary(summary))
    if args.json:
        print(json.dumps({"weights": predictor.model_version, "images": len(data.images), **summary}))
    return 0
