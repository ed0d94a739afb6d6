"""Training from random init on synthetic shapes: the small architecture's held-out COCO AP and
wall-clock time, next to the target (mask AP >= 0.6 within 20 minutes on a 2-core CPU).

    python bench/train_synthetic.py [--iters 3500] [--batch-size 4] [--train-images 2000] [--device cpu]

A ResNet-50-FPN of torchvision's layout trained from nothing (issue 19: trained weights to judge
bfloat16 on; the frozen batch norm of that layout cannot train from random weights), masks only:

    python bench/train_synthetic.py --arch maskrcnn_resnet50_fpn --body-norm bn --no-keypoints \
        --input-size 320 --box-rois 128 --batch-size 2 --iters 1500 --amp --frozen-out R50.safetensors

Data are ``model.synthetic`` shapes (320 x 320, 2-6 shapes an image), train and held-out sets
drawn from different seeds. Training is ``model.training.loop.train``, the code behind ``main.py
train``; the time counts training and the final evaluation, not data generation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.data import load_coco  # noqa: E402
from model.synthetic import generate  # noqa: E402
from model.training.comm import Distributed  # noqa: E402
from model.training.events import EventLog  # noqa: E402
from model.training.loop import train  # noqa: E402
from model.training.options import TrainOptions  # noqa: E402
from model.training.setup import build_training_model  # noqa: E402
from model.weights.formats import save_weights  # noqa: E402
from model.weights.transfer import freeze_batch_norm  # noqa: E402

TARGET_MASK_AP = 0.6
TARGET_MINUTES = 20.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="maskrcnn_resnet18_fpn_small")
    parser.add_argument("--iters", type=int, default=3500)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--clip-grad", type=float, default=10.0)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--size", type=int, default=320, help="side of the synthetic images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 on the CPU)")
    parser.add_argument("--body-norm", choices=["gn", "bn"], help="the ResNet body's normalisation (default: gn)")
    parser.add_argument("--no-keypoints", action="store_true", help="masks only (as torchvision's mask networks)")
    parser.add_argument("--input-size", type=int, help="the network's input side (default: the architecture's)")
    parser.add_argument("--box-rois", type=int, help="RoIs sampled per image for the box head (default 512)")
    parser.add_argument("--checkpoint-period", type=int, help="iterations between checkpoints (default: at the end)")
    parser.add_argument(
        "--frozen-out", type=Path, help="also write the final model with its trained batch norm frozen, as used"
    )
    parser.add_argument("--data", type=Path, help="folder for the generated data (default: a temporary one)")
    parser.add_argument("--out", type=Path, help="run folder (default: a temporary one)")
    parser.add_argument("--quiet", action="store_true", help="no JSON events on stdout")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        root = args.data or Path(scratch) / "data"
        train_file = root / "train" / "annotations.json"
        val_file = root / "val" / "annotations.json"
        if not train_file.is_file():
            generate(root / "train", args.train_images, seed=1, size=(args.size, args.size))
        if not val_file.is_file():
            generate(root / "val", args.val_images, seed=2, size=(args.size, args.size))
        train_data = load_coco(train_file, train_file.parent / "images")
        val_data = load_coco(val_file, val_file.parent / "images")

        torch.manual_seed(0)
        model, _ = build_training_model("none", args.arch, train_data.labels, **model_overrides(args))
        options = TrainOptions(
            iterations=args.iters,
            batch_size=args.batch_size,
            lr=args.lr,
            clip_grad_norm=args.clip_grad,
            checkpoint_period=args.checkpoint_period or args.iters,
            log_period=50,
            amp=args.amp or None,
        )
        events = EventLog(enabled=not args.quiet, progress_bar=False)
        started = time.perf_counter()
        result = train(
            model,
            train_data,
            val_data,
            args.out or Path(scratch) / "run",
            options,
            device=Distributed().device(args.device),
            events=events,
            evaluate_before=False,
        )
        minutes = (time.perf_counter() - started) / 60
        if args.frozen_out:
            save_weights(freeze_batch_norm(model), args.frozen_out)

    figures = {key: result.evaluation.get(key, {}).get("AP") for key in ("segm", "bbox", "keypoints")}
    precision = (
        "bfloat16 autocast" if args.amp and args.device == "cpu" else "mixed precision" if args.amp else "float32"
    )
    print(
        f"\n{args.arch}, random init, {args.iters} iterations x {args.batch_size} images of "
        f"{args.size} px, {precision}, {torch.get_num_threads()} threads on {args.device}"
    )
    print(f"{'':<10}{'mask AP':>10}{'box AP':>10}{'kp AP':>10}{'minutes':>10}")
    print(
        f"{'ours':<10}"
        + "".join(f"{v:>10.3f}" if v is not None else f"{'-':>10}" for v in figures.values())
        + f"{minutes:>10.1f}"
    )
    print(f"{'target':<10}{TARGET_MASK_AP:>10.3f}{'':>10}{'':>10}{TARGET_MINUTES:>10.1f}")


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``ModelConfig`` fields the options change from the architecture's."""
    overrides: dict[str, Any] = {}
    if args.body_norm:
        overrides["backbone_norm"] = args.body_norm
    if args.no_keypoints:
        overrides["keypoint_on"] = False
    if args.input_size:
        overrides.update(min_size=(args.input_size,), max_size=args.input_size)
    if args.box_rois:
        overrides["box_batch_size_per_image"] = args.box_rois
    return overrides


if __name__ == "__main__":
    main()
