"""bfloat16 against float32 on trained weights (issue 19, item 2): what ``auto``'s check
(``model.precision_check``) would decide, on more images than the one it uses.

    python bench/precision.py [--weights NAME|PATH] [--images DIR] [--limit 10] [--threshold 0.5]
                              [--annotations GT.json]

Random weights cannot judge bfloat16 (their scores are near-tied, and any rounding reorders them),
so this runs a trained model: the bundled demo model by default, or any weights file or registry
name. For each image it prints the detections above the display threshold both ways, then the
agreement over all of them against the tolerances (detections within 1 per image, median mask IoU
≥ 0.99, keypoints ≤ 2 px), the verdict, and the median time per image of each precision, measured
in the same run. With ``--annotations`` (a COCO file of the images in ``--images``) it also prints
the COCO AP of both over all of its images, against the tolerance of 0.01 mask AP. bfloat16 runs
even on a CPU without it (emulated: slower, but the numbers agree as they would on one with it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.images import read_image  # noqa: E402
from model.precision_check import Agreement, Tolerances, compare  # noqa: E402
from model.predictor import Predictor  # noqa: E402
from resources import DEMO_DIR, DEMO_MODEL  # noqa: E402

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
PRECISIONS = ("fp32", "bf16")  # the exact one, and the one auto's check judges


@dataclass
class PrecisionReport:
    weights: str
    counts: list[tuple[str, int, int]]  # image name, fp32 detections, bf16 detections
    agreement: Agreement
    passes: bool
    ms: dict[str, float]  # precision -> median ms per image


def both_precisions(weights: str, **options: Any) -> dict[str, Predictor]:
    """The CPU predictors of ``weights`` in ``"fp32"`` and ``"bf16"``, made with ``options``."""
    with warnings.catch_warnings():  # bf16 on a CPU without it warns that it is slower: known here
        warnings.simplefilter("ignore", RuntimeWarning)
        return {precision: Predictor(weights, device="cpu", precision=precision, **options) for precision in PRECISIONS}


def measure(weights: str, images: Sequence[Path], threshold: float) -> PrecisionReport:
    predictors = both_precisions(weights, score_threshold=threshold)
    found: dict[str, list] = {precision: [] for precision in PRECISIONS}
    times: dict[str, list[float]] = {precision: [] for precision in PRECISIONS}
    for path in images:
        pixels = read_image(path)
        for precision, predictor in predictors.items():
            start = time.perf_counter()
            found[precision].append(predictor.predict(pixels))
            times[precision].append((time.perf_counter() - start) * 1000)
            predictor.clear_cache()
    agreement = compare(found["fp32"], found["bf16"])
    return PrecisionReport(
        weights=predictors["fp32"].model_version,
        counts=[(p.name, len(a), len(b)) for p, a, b in zip(images, found["fp32"], found["bf16"], strict=True)],
        agreement=agreement,
        passes=agreement.passes(Tolerances()),
        ms={name: statistics.median(values) for name, values in times.items()},
    )


AP_TOLERANCE = 0.01  # issue 19: mask AP of bfloat16 within this of float32's


def ap_both_ways(weights: str, annotations: Path, image_root: Path) -> dict[str, dict[str, float]]:
    """COCO AP (``"segm"``, ``"bbox"``, ``"keypoints"``) of each precision, at the model's own score
    threshold, as ``main.py evaluate --precision`` computes it."""
    from model.data import load_coco
    from model.evaluation import evaluate

    data = load_coco(annotations, image_root)
    figures = {}
    for precision, predictor in both_precisions(weights, feature_cache_size=0).items():
        summary = evaluate(predictor, data)
        kinds = [kind for kind in ("segm", "bbox", "keypoints") if kind in summary]
        figures[precision] = {kind: summary[kind]["AP"] for kind in kinds}
    return figures


def format_ap(figures: dict[str, dict[str, float]]) -> str:
    lines = ["COCO AP    fp32    bf16  difference"]
    for kind in figures["fp32"]:
        exact, fast = figures["fp32"][kind], figures["bf16"][kind]
        lines.append(f"{kind:<9}{exact:>7.4f}{fast:>8.4f}{fast - exact:>+12.4f}")
    difference = abs(figures["bf16"]["segm"] - figures["fp32"]["segm"])
    verdict = "within" if difference <= AP_TOLERANCE else "NOT within"
    lines.append(f"mask AP {verdict} {AP_TOLERANCE} of fp32's")
    return "\n".join(lines)


def format_report(report: PrecisionReport, threshold: float) -> str:
    lines = [f"{report.weights}, detections at or above {threshold}", "image  fp32  bf16"]
    lines += [f"{name}  {exact}  {fast}" for name, exact, fast in report.counts]
    tolerances = Tolerances()
    lines.append(
        f"agreement over {report.agreement.summary()}; tolerances: within {tolerances.count}, "
        f"IoU >= {tolerances.median_mask_iou}, <= {tolerances.keypoint_px} px"
    )
    lines.append(f"auto would run: {'bf16' if report.passes else 'fp32'}")
    lines.append(f"median per image: fp32 {report.ms['fp32']:.1f} ms, bf16 {report.ms['bf16']:.1f} ms")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> PrecisionReport:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(DEMO_MODEL), help="a weights file or registry name (default: demo)")
    parser.add_argument("--images", type=Path, default=DEMO_DIR / "images", help="a folder of images")
    parser.add_argument("--limit", type=int, default=10, help="at most this many images")
    parser.add_argument("--threshold", type=float, default=0.5, help="the display threshold")
    parser.add_argument("--annotations", type=Path, help="a COCO file of the images: also the AP both ways")
    args = parser.parse_args(argv)
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: args.limit]
    report = measure(args.weights, images, args.threshold)
    print(format_report(report, args.threshold))
    if args.annotations:
        print(format_ap(ap_both_ways(args.weights, args.annotations, args.images)))
    return report


if __name__ == "__main__":
    main()
