"""Whether bfloat16 may stand in for float32 for one set of weights (issue 19, item 2).

``auto`` picks bfloat16 on a CPU that computes in it (``model.precision``), and on the trained
demo model it keeps every detection. But a model whose scores sit close to the display threshold,
or whose masks are thin, can lose detections or mask pixels to bfloat16's 8-bit mantissa, and
random weights cannot tell (their near-tied scores reorder under any rounding). So the first time
a set of weights runs under ``auto`` on such a CPU, the ``Predictor`` runs a few of the images it
is about to propose on both ways and keeps bfloat16 only if it agrees with float32 within
:class:`Tolerances`; the verdict is kept per weights version, processor and torch version
(:data:`VERDICTS_FILE` in torch's checkpoint folder, beside the weights), so it costs one extra
float32 pass once, not at every start.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from model.files import flush_to_disk
from model.precision import cpu_name
from model.structures import Instances

VERDICTS_FILE = "precision-verdicts.json"
# the images a verdict is made on: more cost a float32 pass each, fewer say less
CHECK_IMAGES = 3


@dataclass(frozen=True)
class Tolerances:
    """How far bfloat16 may differ from float32 and still stand in for it (issue 19, item 2)."""

    count: int = 1  # detections above the display threshold, per image
    median_mask_iou: float = 0.99  # each float32 mask's best IoU with a bfloat16 one, median
    keypoint_px: float = 2.0  # median distance of matched detections' keypoints, in image pixels


@dataclass(frozen=True)
class Agreement:
    """bfloat16 against float32 on ``images`` images."""

    images: int
    worst_count_difference: int
    median_mask_iou: float  # 1.0 when float32 found nothing
    keypoint_px: float  # 0.0 without keypoints

    def passes(self, tolerances: Tolerances) -> bool:
        return (
            self.worst_count_difference <= tolerances.count
            and self.median_mask_iou >= tolerances.median_mask_iou
            and self.keypoint_px <= tolerances.keypoint_px
        )

    def summary(self) -> str:
        return (
            f"{self.images} image{'' if self.images == 1 else 's'}: "
            f"detections differ by up to {self.worst_count_difference}, "
            f"median mask IoU {self.median_mask_iou:.3f}, keypoints {self.keypoint_px:.1f} px"
        )


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) IoU of boolean masks a (N, H, W) and b (M, H, W)."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def compare(exact: Sequence[Instances], fast: Sequence[Instances]) -> Agreement:
    """How the detections of ``fast`` (bfloat16) agree with ``exact`` (float32), image by image."""
    differences, ious, distances = [0], [], []
    for want, got in zip(exact, fast, strict=True):
        differences.append(abs(len(want) - len(got)))
        if not len(want) or want.masks is None:
            continue
        if not len(got) or got.masks is None:
            ious.extend([0.0] * len(want))
            continue
        overlap = _mask_iou(want.masks, got.masks)
        best, match = overlap.max(dim=1)
        ious.extend(best.tolist())
        if want.keypoints is not None and got.keypoints is not None:
            shift = (want.keypoints[:, :, :2] - got.keypoints[match][:, :, :2]).norm(dim=-1)
            distances.extend(shift.flatten().tolist())
    return Agreement(
        images=len(exact),
        worst_count_difference=max(differences),
        median_mask_iou=statistics.median(ious) if ious else 1.0,
        keypoint_px=statistics.median(distances) if distances else 0.0,
    )


def verdict_key(model_version: str) -> str:
    """What a verdict holds for: the weights, the processor (its bfloat16 units) and torch."""
    return f"{model_version} | {platform.processor() or platform.machine()} {cpu_name()} | torch {torch.__version__}"


def verdicts_path() -> Path:
    from model.weights.download import cache_dir

    return cache_dir() / VERDICTS_FILE


def read_verdict(key: str, path: Path | None = None) -> str | None:
    """The precision decided for ``key`` before ("bf16" or "fp32"), None if never, or if the file
    is unreadable (then the check runs again: it is only time)."""
    try:
        verdicts = json.loads((path or verdicts_path()).read_text())
        precision = verdicts[key]["precision"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return precision if precision in ("bf16", "fp32") else None


def remember_verdict(key: str, precision: str, agreement: Agreement, path: Path | None = None) -> None:
    """Keeps the verdict (written whole to a temporary file, then renamed over the old one); a
    folder that cannot be written only means checking again next time."""
    path = path or verdicts_path()
    try:
        verdicts = json.loads(path.read_text()) if path.is_file() else {}
        if not isinstance(verdicts, dict):
            verdicts = {}
    except (OSError, ValueError):
        verdicts = {}
    verdicts[key] = {"precision": precision, **asdict(agreement)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(verdicts, indent=1, sort_keys=True))
        flush_to_disk(temporary)
        os.replace(temporary, path)
    except OSError:
        pass
