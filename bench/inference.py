"""Inference latency: our Mask R-CNN (``model.Predictor``) in float32 and under the execution policy
(``model.precision``), against torchvision's in float32, same weights, same images, measured in
the same run.

    python bench/inference.py [--arch maskrcnn_resnet50_fpn] [--size 640x480] [--runs 5]
                              [--device cpu,cuda] [--precision auto|fp32|bf16]

End to end is a decoded H x W x 3 uint8 image in, boolean masks at image resolution out (both
sides thresholded at 0.5, results on the CPU). "ours fp32" is the policy forced to float32
(channels-last, batch norm folded); "ours <policy>" is what ``--precision`` picks on the device
(``auto``: bfloat16 on a CPU with AMX or AVX512-BF16, float16 on CUDA). The first box-to-mask
after an image opens is ``predict_in_box`` on an image whose features are not cached yet (the
backbone runs, then the heads); the cached one reuses them. torchvision has neither path, nor
builders for our own architectures (``maskrcnn_resnet18_fpn_small``): there its column is n/a.
Runs alternate between the models and the median is reported, so background load hits all alike.

``--arch masks_and_keypoints_resnet50_fpn.COCO_V1`` (a combined registry entry, ``model.person_pose``)
times the combined predictor beside its two networks run separately, ours and torchvision's: the
torchvision column of the combined row is torchvision's two networks one after the other (it has
no combined model), and its note says what the joining costs over our two networks alone.

Published weights cannot be downloaded on the build machines, so the models get the same
calibrated random weights of torchvision's layout (tests/model/reference.py: scores and masks
spread as a trained model's are, so a realistic number of detections); our own architectures get
their random initialisation. Random weights leave scores near-tied, so the policy's row counts
how many detections it shares with float32 but cannot judge its accuracy: the trained demo model
does (tests/model/test_precision.py).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torchvision  # noqa: E402
import torchvision.models.detection as tv_detection  # noqa: E402

from model import Instances, Predictor, build_model  # noqa: E402
from model.builders import ARCHITECTURES  # noqa: E402
from model.person_pose import PersonPosePredictor  # noqa: E402
from model.precision import cpu_has_native_bf16  # noqa: E402
from model.synthetic import make_sample  # noqa: E402
from model.weights.registry import COMBINED, CombinedWeightsInfo  # noqa: E402
from tests.model.reference import torchvision_reference  # noqa: E402

Row = tuple[str, str, str, str]


def times_ms(fn: Callable[[], object], runs: int, sync: Callable[[], None]) -> list[float]:
    times = []
    for _ in range(runs):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return times


def same_detections(boxes: torch.Tensor, labels: torch.Tensor, found: Instances, tolerance: float) -> int:
    """How many of ``found`` have a detection of the same label in ``boxes`` within ``tolerance``
    pixels at every corner (in any order: near-equal scores may swap places)."""
    if len(found) == 0 or len(boxes) == 0:
        return 0
    close = (boxes.float()[:, None] - found.boxes[None]).abs().amax(-1) <= tolerance
    close &= labels[:, None] == found.labels[None]
    return int(close.any(0).sum())


def bench_device(arch: str, device: torch.device, height: int, width: int, runs: int, precision: str) -> list[Row]:
    rng = np.random.default_rng(0)
    image = make_sample(rng, height, width, min_shapes=4, max_shapes=8)[0]
    image_t = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    reference = None
    if hasattr(tv_detection, arch):
        reference = torchvision_reference(arch, [image_t], random_batchnorm=False).to(device)
        state = reference.state_dict()
    else:
        torch.manual_seed(0)
        state = build_model(arch).state_dict()

    def predictor(precision: str) -> Predictor:
        ours = build_model(arch)
        ours.load_state_dict(state, strict=True)
        # the Predictor folds the batch norms of weights it loads itself; these it is handed
        return Predictor(ours, device=device, precision=precision, fold_batch_norm=True)

    variants = {"fp32": predictor("fp32")}
    policy = predictor(precision)
    if policy.policy.precision != "fp32":
        variants[policy.policy.precision] = policy
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run_reference() -> dict[str, torch.Tensor]:
        assert reference is not None
        with torch.inference_mode():
            x = torch.from_numpy(image).to(device).permute(2, 0, 1).float().div_(255)
            out = reference([x])[0]
            result = {k: v.cpu() for k, v in out.items() if k != "masks"}
            if "masks" in out:
                result["masks"] = (out["masks"][:, 0] >= 0.5).cpu()
            return result

    def run_ours(p: Predictor) -> Callable[[], Instances]:
        def run() -> Instances:
            p.clear_cache()  # the backbone runs every time
            return p.predict(image)

        return run

    jobs: dict[str, Callable[[], object]] = {name: run_ours(p) for name, p in variants.items()}
    if reference is not None:
        jobs = {"torchvision": run_reference, **jobs}
    outputs: dict[str, object] = {}
    for _ in range(2):  # warm-up: allocator, oneDNN primitives, NVRTC kernels
        outputs = {name: job() for name, job in jobs.items()}
    end_to_end: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(runs):
        for name, job in jobs.items():
            end_to_end[name] += times_ms(job, 1, sync)
    box = (0.2 * width, 0.25 * height, 0.6 * width, 0.85 * height)
    first_box: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(runs):  # a newly opened image: its features are not cached yet
        for name, p in variants.items():
            first_box[name] += times_ms(lambda p=p: (p.clear_cache(), p.predict_in_box(image, box)), 1, sync)
    cached_box = {}
    for name, p in variants.items():
        p.predict_in_box(image, box)
        cached_box[name] = times_ms(lambda p=p: p.predict_in_box(image, box), max(10, 4 * runs), sync)
    medians = {name: statistics.median(times) for name, times in end_to_end.items()}
    rows = [_end_to_end_row(device, name, medians, outputs) for name in variants]
    for name in variants:
        first, cached = statistics.median(first_box[name]), statistics.median(cached_box[name])
        rows.append((f"{device.type} {name}: first box-to-mask after an image opens", _ms(None), _ms(first), ""))
        rows.append((f"{device.type} {name}: predict_in_box, cached features", _ms(None), _ms(cached), ""))
    return rows


def bench_combined(
    info: CombinedWeightsInfo, device: torch.device, height: int, width: int, runs: int, precision: str
) -> list[Row]:
    """The combined predictor of ``info`` beside its two networks run separately (ours and
    torchvision's, the same calibrated random weights), under float32 and the policy."""
    rng = np.random.default_rng(0)
    image = make_sample(rng, height, width, min_shapes=4, max_shapes=8)[0]
    image_t = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    references = {
        part: torchvision_reference(file.architecture, [image_t], random_batchnorm=False).to(device)
        for part, file in (("masks", info.masks), ("keypoints", info.keypoints))
    }

    def ours(part: str, precision: str) -> Predictor:
        model = build_model(getattr(info, part).architecture)
        model.load_state_dict(references[part].state_dict(), strict=True)
        return Predictor(model, device=device, precision=precision, fold_batch_norm=True)

    def run_reference(reference: torch.nn.Module) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode():
                x = torch.from_numpy(image).to(device).permute(2, 0, 1).float().div_(255)
                out = reference([x])[0]
                return {k: ((v[:, 0] >= 0.5) if k == "masks" else v).cpu() for k, v in out.items()}

        return run

    def uncached(p: Predictor | PersonPosePredictor) -> Callable[[], Instances]:
        return lambda: (p.clear_cache(), p.predict(image))[1]

    variants = {"fp32": PersonPosePredictor(ours("masks", "fp32"), ours("keypoints", "fp32"), name=info.name)}
    policy = PersonPosePredictor(ours("masks", precision), ours("keypoints", precision), name=info.name)
    if policy.policy.precision != "fp32":
        variants[policy.policy.precision] = policy
    jobs: dict[str, Callable[[], object]] = {f"tv {part}": run_reference(r) for part, r in references.items()}
    for name, p in variants.items():
        jobs |= {f"{name} masks": uncached(p.masks), f"{name} keypoints": uncached(p.keypoints)}
        jobs[f"{name} combined"] = uncached(p)
    outputs: dict[str, object] = {}
    for _ in range(2):  # warm-up
        outputs = {name: job() for name, job in jobs.items()}
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(runs):
        for name, job in jobs.items():
            times[name] += times_ms(job, 1, sync)
    ms = {name: statistics.median(t) for name, t in times.items()}
    tv_both = ms["tv masks"] + ms["tv keypoints"]
    box = (0.2 * width, 0.25 * height, 0.6 * width, 0.85 * height)
    rows: list[Row] = []
    for name, p in variants.items():
        found: Instances = outputs[f"{name} masks"]  # type: ignore[assignment]
        people: Instances = outputs[f"{name} keypoints"]  # type: ignore[assignment]
        joined: Instances = outputs[f"{name} combined"]  # type: ignore[assignment]
        posed = int(joined.keypoints[:, :, 2].any(1).sum()) if joined.keypoints is not None else 0
        here = f"{device.type} {name}"
        mine = {part: ms[f"{name} {part}"] for part in ("masks", "keypoints", "combined")}
        separately = mine["masks"] + mine["keypoints"]
        joining = f"  {mine['combined'] / separately:.2f}x ours separately"
        rows += [
            _timed(f"{here}: mask network alone ({len(found)} detections)", ms["tv masks"], mine["masks"]),
            _timed(f"{here}: keypoint network alone ({len(people)} persons)", ms["tv keypoints"], mine["keypoints"]),
            _timed(f"{here}: the two networks run separately", tv_both, separately),
            _timed(
                f"{here}: combined ({len(joined)} instances, {posed} with keypoints)",
                tv_both,
                mine["combined"],
                joining,
            ),
        ]
        first = statistics.median(
            times_ms(lambda p=p: (p.clear_cache(), p.predict_in_box(image, box, "person")), runs, sync)
        )
        cached = statistics.median(
            times_ms(lambda p=p: p.predict_in_box(image, box, "person"), max(10, 4 * runs), sync)
        )
        rows.append((f"{here}: combined, first person box after an image opens", _ms(None), _ms(first), ""))
        rows.append((f"{here}: combined, person box on cached features", _ms(None), _ms(cached), ""))
    return rows


def _timed(label: str, tv_ms: float, ours_ms: float, note: str = "") -> Row:
    return (label, _ms(tv_ms), _ms(ours_ms), f"{ours_ms / tv_ms:5.2f}x{note}")


def _end_to_end_row(device: torch.device, name: str, medians: dict[str, float], outputs: dict[str, object]) -> Row:
    """One variant's end-to-end time beside torchvision's, and how its detections agree: fp32
    with torchvision's (0.05 px), the policy's with our fp32 ones (1 px)."""
    found: Instances = outputs[name]  # type: ignore[assignment]
    tv_ms = medians.get("torchvision")
    if name == "fp32" and "torchvision" in outputs:
        reference: dict[str, torch.Tensor] = outputs["torchvision"]  # type: ignore[assignment]
        kept = same_detections(reference["boxes"], reference["labels"], found, 0.05)
        same = kept == len(found) == len(reference["boxes"])
        note = "" if same else f"  OUTPUTS DIFFER ({kept} of {len(found)} as torchvision's)"
    elif name != "fp32":
        ours32: Instances = outputs["fp32"]  # type: ignore[assignment]
        note = f"  {same_detections(ours32.boxes, ours32.labels, found, 1.0)} of {len(found)} as fp32's (1 px)"
    else:
        note = ""
    ratio = f"{medians[name] / tv_ms:5.2f}x" if tv_ms else "  n/a"
    return (f"{device.type} {name}: end to end ({len(found)} detections)", _ms(tv_ms), _ms(medians[name]), ratio + note)


def _ms(value: float | None) -> str:
    return f"{value:9.1f}" if value is not None else "      n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="maskrcnn_resnet50_fpn", choices=[*ARCHITECTURES, *COMBINED])
    parser.add_argument("--size", default="640x480", help="image W x H")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cpu,cuda")
    parser.add_argument(
        "--precision", default="auto", choices=("auto", "fp32", "bf16"), help="the policy row beside fp32"
    )
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    devices = [torch.device(d) for d in args.device.split(",") if d != "cuda" or torch.cuda.is_available()]

    print(
        f"{args.arch}, one {width}x{height} synthetic image (resized as the architecture does), "
        f"median of {args.runs} alternating runs, --precision {args.precision}"
    )
    print(
        "weights: the same random-init weights of torchvision's layout in every model "
        "(published weights are not downloadable here)"
        if hasattr(tv_detection, args.arch) or args.arch in COMBINED
        else "weights: the architecture's random initialisation (torchvision has no builder for it: n/a)"
    )
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"{torch.get_num_threads()} CPU threads, native bfloat16 on this CPU: "
        f"{'yes' if cpu_has_native_bf16() else 'no'}"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA device")
    )
    if args.arch in COMBINED:
        bench = functools.partial(bench_combined, COMBINED[args.arch])
    else:
        bench = functools.partial(bench_device, args.arch)
    rows = [row for device in devices for row in bench(device, height, width, args.runs, args.precision)]
    header = ("", "torchvision ms", "ours ms", "ours/tv")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        # the name and the last column (ratio and agreement) left-aligned, the times right-aligned
        print("  ".join(cell.rjust(widths[i]) if 0 < i < 3 else cell.ljust(widths[i]) for i, cell in enumerate(row)))


if __name__ == "__main__":
    main()
