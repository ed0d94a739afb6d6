"""Inference latency: our Mask R-CNN (``model.Predictor``) against torchvision's, same weights, same
images, measured in the same run.

    python bench/inference.py [--arch maskrcnn_resnet50_fpn] [--size 640x480] [--runs 5] [--device cpu,cuda]

End to end is a decoded H x W x 3 uint8 image in, boolean masks at image resolution out (both
sides thresholded at 0.5, results on the CPU). ``predict_in_box`` is the mask for one drawn box
from the image's cached features; torchvision has no such path. Runs alternate between the two
models and the median is reported, so background load hits both alike.

Published weights cannot be downloaded on the build machines, so both models get the same
calibrated random weights of torchvision's layout (tests/model/reference.py: scores and masks spread as
a trained model's are, so a realistic number of detections).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torchvision  # noqa: E402

from model import Predictor, build_model  # noqa: E402
from model.builders import ARCHITECTURES  # noqa: E402
from model.synthetic import make_sample  # noqa: E402
from tests.model.reference import torchvision_reference  # noqa: E402


def median_ms(fn: Callable[[], object], runs: int, sync: Callable[[], None]) -> list[float]:
    times = []
    for _ in range(runs):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return times


def bench_device(arch: str, device: torch.device, height: int, width: int, runs: int) -> list[tuple[str, ...]]:
    rng = np.random.default_rng(0)
    image = make_sample(rng, height, width, min_shapes=4, max_shapes=8)[0]
    image_t = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    reference = torchvision_reference(arch, [image_t], random_batchnorm=False).to(device)
    ours = build_model(arch)
    ours.load_state_dict(reference.state_dict(), strict=True)
    predictor = Predictor(ours, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run_reference() -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            x = torch.from_numpy(image).to(device).permute(2, 0, 1).float().div_(255)
            out = reference([x])[0]
            result = {k: v.cpu() for k, v in out.items() if k != "masks"}
            if "masks" in out:
                result["masks"] = (out["masks"][:, 0] >= 0.5).cpu()
            return result

    def run_ours() -> object:
        predictor.clear_cache()  # the backbone runs every time
        return predictor.predict(image)

    for _ in range(2):  # warm-up: allocator, oneDNN primitives, NVRTC kernels
        ref_out, our_out = run_reference(), run_ours()
    ref_ms, our_ms = [], []
    for _ in range(runs):
        ref_ms += median_ms(run_reference, 1, sync)
        our_ms += median_ms(run_ours, 1, sync)

    predictor.predict(image)
    h, w = height, width
    box = (0.2 * w, 0.25 * h, 0.6 * w, 0.85 * h)
    predictor.predict_in_box(image, box)
    in_box_ms = median_ms(lambda: predictor.predict_in_box(image, box), max(10, 4 * runs), sync)

    # the same detections, in any order: near-equal scores may swap places in float32
    same = len(ref_out["boxes"]) == len(our_out)
    if same and len(our_out):
        close = (ref_out["boxes"].float()[:, None] - our_out.boxes[None]).abs().amax(-1) <= 0.05
        close &= ref_out["labels"][:, None] == our_out.labels[None]
        same = bool(close.any(0).all() and close.any(1).all())
    ref_med, our_med = statistics.median(ref_ms), statistics.median(our_ms)
    name = f"{device.type} {'fp16+channels-last' if predictor.mixed_precision else 'fp32'}"
    return [
        (
            f"{name}: end to end ({len(our_out)} detections)",
            f"{ref_med:9.1f}",
            f"{our_med:9.1f}",
            f"{our_med / ref_med:5.2f}x" + ("" if same else "  OUTPUTS DIFFER"),
        ),
        (f"{name}: predict_in_box, cached features", "      n/a", f"{statistics.median(in_box_ms):9.1f}", ""),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="maskrcnn_resnet50_fpn", choices=list(ARCHITECTURES))
    parser.add_argument("--size", default="640x480", help="image W x H")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cpu,cuda")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    devices = [torch.device(d) for d in args.device.split(",") if d != "cuda" or torch.cuda.is_available()]

    print(
        f"{args.arch}, one {width}x{height} synthetic image (resized to min 800 / max 1333), "
        f"median of {args.runs} alternating runs"
    )
    print(
        "weights: the same random-init weights of torchvision's layout in both models "
        "(published weights are not downloadable here)"
    )
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA device")
    )
    rows = [row for device in devices for row in bench_device(args.arch, device, height, width, args.runs)]
    header = ("", "torchvision ms", "ours ms", "ours/tv")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(cell.rjust(widths[i]) if i else cell.ljust(widths[i]) for i, cell in enumerate(row)))


if __name__ == "__main__":
    main()
