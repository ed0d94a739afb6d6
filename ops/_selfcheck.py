"""Which implementation runs RoIAlign on each CUDA device: the NVRTC kernels (``ops/_cuda.py``)
once they have been seen to agree with the portable PyTorch path (``ops/_cpu.py``) on that
device, and the portable path otherwise.

A kernel that no one has seen work on a given GPU is not trusted blindly: the first RoIAlign on a
CUDA device runs a small random case through both on that device (forward and backward, float32
and float16, one map, four FPN levels, and three channels for the few-channel layout) and
compares. If the kernels fail to compile, load or launch, or differ beyond tolerance, one warning
line names the cause and the device, and the portable path serves that device for the rest of the
process. The answer is kept per device and process. The check takes milliseconds of GPU time; the
kernels' compilation (about a second, then cached on disk) would happen at first use anyway.

``MASKRCNN_ROI_ALIGN`` forces a path: ``cuda`` (the kernels, unchecked: their failures raise),
``portable``, or ``auto`` (the default: the kernels where they pass the check).
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from ops import _cpu, _cuda
from ops._levels import level_range, map_levels

ENV_VAR = "MASKRCNN_ROI_ALIGN"
MODES = ("auto", "cuda", "portable")

# The four-level case maps boxes of side 14, 28 and 56 pixels to P3, P4 and P5 (instead of 112,
# 224 and 448), so that a small image has RoIs on every level.
_CANONICAL_SCALE, _CANONICAL_LEVEL = 28, 4
# (rtol, atol) against the portable path; a layout or indexing fault is off by O(1)
_TOLERANCE = {torch.float32: (1e-4, 1e-4), torch.float16: (1e-2, 1e-2)}

_kernels_pass: dict[torch.device, bool] = {}
_lock = threading.Lock()


def mode() -> str:
    """``MASKRCNN_ROI_ALIGN``: auto (the default), cuda or portable."""
    value = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{ENV_VAR}={value!r}: expected one of {', '.join(MODES)}")
    return value


def kernels_serve(device: torch.device) -> bool:
    """Whether the NVRTC kernels run RoIAlign on ``device`` (False: the portable path does).

    In auto mode the first call for a device runs ``check`` (under a lock; later calls read the
    answer) and warns once if the kernels fail it.
    """
    forced = mode()
    if forced != "auto":
        return forced == "cuda"
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    passed = _kernels_pass.get(device)
    if passed is None:
        with _lock:
            passed = _kernels_pass.get(device)
            if passed is None:
                passed = _kernels_pass[device] = _decide(device)
    return passed


def _decide(device: torch.device) -> bool:
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            f"ops: RoIAlign checks its CUDA kernels on {describe(device)} at first use, which cannot happen "
            "during CUDA graph capture: run it once before capturing (as any warm-up does)"
        )
    failure = check(device)
    if failure is not None:
        warnings.warn(
            f"ops: the CUDA RoIAlign kernels {failure} on {describe(device)}; using the portable PyTorch path "
            f"on this device ({ENV_VAR}=cuda|portable forces one)",
            stacklevel=2,
        )
    return failure is None


def describe(device: torch.device) -> str:
    """``cuda:0 (NVIDIA H200)``: the device as a warning names it."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


@dataclass
class _Case:
    """One RoIAlign call and its backward, on ``features``' device."""

    name: str  # e.g. "float16, 4 levels"
    features: list[Tensor]
    rois: Tensor
    scales: list[float]
    multilevel: bool
    pooled: tuple[int, int]
    sampling_ratio: int
    aligned: bool
    grad: Tensor


def check(device: torch.device) -> str | None:
    """Run the check cases through the kernels and the portable path on ``device``.

    Returns:
        None when they agree, else what went wrong, as words that follow "the CUDA RoIAlign
        kernels" (one line). A failure of the portable path itself raises.
    """
    for case in _cases(device):
        expected = _run_portable(case)
        try:
            got = _run_kernels(case)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # launch failures surface asynchronously
        except Exception as error:  # noqa: BLE001 - any failure to compile, load or launch disqualifies them
            return f"failed ({case.name}): {_one_line(error)}"
        for what, ours, reference in zip(_output_names(case), got, expected):
            problem = _difference(ours, reference, *_TOLERANCE[case.features[0].dtype])
            if problem:
                return f"{problem} ({case.name}, {what})"
    return None


def _cases(device: torch.device) -> list[_Case]:
    """The check's inputs: 40 channels (a full and a partial 32-lane tile) in two images; one map
    with adaptive sampling, aligned boxes and 12x11 bins (two 128-bin tiles), channels-last; four
    NCHW FPN levels with sampling ratio 2 and RoIs on every level; and three channels (the
    few-channel forward) pooled as Mask R-CNN's mask targets pool gt masks: 28x28 bins over
    several blocks, adaptive sampling, unaligned boxes, NCHW."""
    gen = torch.Generator().manual_seed(0)
    one_map = torch.randn(2, 40, 12, 15, generator=gen, dtype=torch.float64)
    # boxes in image pixels (scale 0.5), some partly off the map, one thinner than a pixel; no
    # sampling point lies on the map's validity border (-1 or the extent), where RoIAlign jumps
    # and one rounding decides the side
    x1 = torch.tensor([0.0, 4, 10, -3, 20, 2, 14, 8, 25, 1])
    y1 = torch.tensor([0.0, 2, 6, -2, 15, 9, 1, 12, 18, 5])
    width = torch.tensor([24.0, 10, 6, 12, 14, 0.6, 9, 16, 8.6, 28])
    height = torch.tensor([20.0, 8, 14, 9, 12, 10, 22, 5, 7.6, 18])
    one_map_rois = _rois(torch.arange(10) % 2, x1, y1, width, height)
    fpn = [torch.randn(2, 40, 64 // s, 96 // s, generator=gen, dtype=torch.float64) for s in (4, 8, 16, 32)]
    fpn_scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    sides = torch.tensor([6.0, 10, 16, 20, 30, 40, 60, 80]).repeat(2)  # P2, P2, P3, P3, P4, P4, P5, P5
    corner = torch.rand(16, 2, generator=gen) * torch.tensor([96.0, 64.0]) - sides[:, None] / 2
    fpn_rois = _rois(torch.arange(16) // 8, corner[:, 0], corner[:, 1], sides, sides * 0.8)
    few = torch.randn(2, 3, 40, 48, generator=gen, dtype=torch.float64)
    few_rois = _rois(  # inside the map, 0.3 to 1.4 bins of 28 a side: grids of 1 and 2 points
        torch.tensor([0, 1, 0, 1, 0, 1]),
        torch.tensor([2.0, 5, 11, 3, 20, 7]),
        torch.tensor([3.0, 1, 9, 14, 6, 2]),
        torch.tensor([40.0, 9, 27, 33.5, 24, 18]),
        torch.tensor([30.0, 36, 20, 8.4, 31, 25]),
    )
    cases = []
    for dtype in (torch.float32, torch.float16):
        name = str(dtype).removeprefix("torch.")
        maps = [one_map.to(device, dtype).contiguous(memory_format=torch.channels_last)]
        rois = one_map_rois.to(device, dtype)
        grad = torch.randn(10, 40, 12, 11, generator=gen).to(device, dtype)
        cases.append(_Case(f"{name}, one map", maps, rois, [0.5], False, (12, 11), -1, True, grad))
        maps = [f.to(device, dtype) for f in fpn]
        rois = fpn_rois.to(device, dtype)
        grad = torch.randn(16, 40, 7, 7, generator=gen).to(device, dtype)
        cases.append(_Case(f"{name}, 4 levels", maps, rois, fpn_scales, True, (7, 7), 2, False, grad))
        maps = [few.to(device, dtype)]
        rois = few_rois.to(device, dtype)
        grad = torch.randn(6, 3, 28, 28, generator=gen).to(device, dtype)
        cases.append(_Case(f"{name}, 3 channels", maps, rois, [1.0], False, (28, 28), -1, False, grad))
    return cases


def _rois(batch_index: Tensor, x1: Tensor, y1: Tensor, width: Tensor, height: Tensor) -> Tensor:
    """(K, 5) ``[batch_index, x1, y1, x2, y2]`` from corners and sizes."""
    return torch.stack([batch_index.to(x1.dtype), x1, y1, x1 + width, y1 + height], 1)


def _output_names(case: _Case) -> list[str]:
    if not case.multilevel:
        return ["forward", "backward"]
    return ["forward"] + [f"backward of level {i}" for i in range(len(case.features))]


def _run_kernels(case: _Case) -> list[Tensor]:
    """The forward's output and the backward's gradient of each map, through the NVRTC kernels."""
    levels = level_range(case.scales) if case.multilevel else None
    common = (case.pooled, case.sampling_ratio, case.aligned)
    fpn = (_CANONICAL_SCALE, _CANONICAL_LEVEL)
    out = _cuda.forward(case.features, case.rois, case.scales, levels, *fpn, *common)
    n, c = case.features[0].shape[:2]
    heights, widths = [f.shape[2] for f in case.features], [f.shape[3] for f in case.features]
    layouts = [_cpu._is_channels_last(f) for f in case.features]
    grads = _cuda.backward(case.grad, case.rois, case.scales, levels, *fpn, n, c, heights, widths, layouts, *common)
    return [out, *grads]


def _run_portable(case: _Case) -> list[Tensor]:
    """As ``_run_kernels``, through the portable path."""
    levels = map_levels(case.rois, case.scales, _CANONICAL_SCALE, _CANONICAL_LEVEL) if case.multilevel else None
    common = (case.pooled, case.sampling_ratio, case.aligned)
    out = _cpu.forward(case.features, case.rois, case.scales, levels, *common)
    return [out, *_cpu.backward(case.grad, case.features, case.rois, case.scales, levels, *common)]


def _difference(ours: Tensor, reference: Tensor, rtol: float, atol: float) -> str | None:
    """None when ``ours`` matches ``reference`` within tolerance, else how it differs."""
    if ours.shape != reference.shape or ours.dtype != reference.dtype:
        return f"give {tuple(ours.shape)} {ours.dtype} where {tuple(reference.shape)} {reference.dtype} is due"
    ours, reference = ours.double(), reference.double()
    if not bool(torch.isfinite(ours).all()):
        return "give non-finite values"
    error = (ours - reference).abs()
    if bool((error <= atol + rtol * reference.abs()).all()):
        return None
    return f"differ from the portable path by up to {float(error.max()):.3g}"


def _one_line(error: BaseException) -> str:
    """``Type: message`` on one line (compiler logs run to many), at most 300 characters."""
    text = " | ".join(line.strip() for line in str(error).splitlines() if line.strip())
    text = f"{type(error).__name__}: {text}"
    return text if len(text) <= 300 else text[:297] + "..."
