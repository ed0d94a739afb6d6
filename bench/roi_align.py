"""RoIAlign: ours (ops.multilevel_roi_align, ops.roi_align) against torchvision's
MultiScaleRoIAlign and roi_align, measured in the same run on the same inputs.

    python bench/roi_align.py               # CPU, and CUDA when a GPU is present
    python bench/roi_align.py --cpu-only
    python bench/roi_align.py --cuda-only   # bench/gpu_check.py: the GPU table alone
    python bench/roi_align.py --crossover   # CPU: our gather and separable paths, and the choice

Workloads, on P2-P5 (256 channels, NCHW) of an 800x1216 image:
    box head      1000 boxes -> 7x7                         forward (inference)
    mask head      100 boxes -> 14x14                       forward (inference)
    training       512 boxes -> 7x7 + 128 boxes -> 14x14    forward and backward
and on 16 full-image gt masks (1 channel, 800x1216):
    mask targets   128 boxes -> 28x28, adaptive sampling    forward (as torchvision's roi_heads
                                                            builds Mask R-CNN's training targets)

Boxes are RPN-like: log-uniform sides from 16 to 800 pixels, clipped to the image, so every FPN
level gets some. CPU: wall clock, median of repeats after a warm-up. CUDA: CUDA events, warm-up,
median; float32 and float16; forward also with NCHW maps read in place (no channels-last copy)
and with channels-last maps. The floor is the memory traffic a kernel cannot avoid (the feature
pixels that any sampling point touches, read once; the output written once; in the backward the
output gradient read once and the full input gradients written once) divided by the bandwidth of
a device-to-device copy measured in the same run. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torchvision
from torchvision.ops import MultiScaleRoIAlign

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ops  # noqa: E402
from ops import _cpu, _cuda, _sampling, _selfcheck, _separable  # noqa: E402
from ops.roi_align import map_levels  # noqa: E402

SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
IMAGE = (800, 1216)
CHANNELS = 256


def make_features(device: str, dtype: torch.dtype, channels_last: bool = False) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    h, w = IMAGE
    maps = [torch.randn(1, CHANNELS, h // s, w // s, generator=gen).to(device, dtype) for s in (4, 8, 16, 32)]
    if channels_last:
        maps = [m.contiguous(memory_format=torch.channels_last) for m in maps]
    return maps


def make_boxes(n: int, seed: int, device: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    h, w = IMAGE
    side = torch.exp(torch.empty(n, 2).uniform_(2.77, 6.68, generator=gen))  # 16..800 px
    centre = torch.rand(n, 2, generator=gen) * torch.tensor([w, h])
    boxes = torch.cat([centre - side / 2, centre + side / 2], 1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    return boxes.to(device)


class Case:
    """One RoIAlign call: ``n`` boxes pooled to ``size`` x ``size``."""

    def __init__(self, n: int, size: int, seed: int, device: str) -> None:
        self.n, self.size = n, size
        self.boxes = [make_boxes(n, seed, device)]
        names = [f"p{i}" for i in range(2, 6)]
        self.names = names
        self.pooler = MultiScaleRoIAlign(names, size, sampling_ratio=2)

    def torchvision(self, features: list[torch.Tensor]) -> torch.Tensor:
        boxes = [b.to(features[0].dtype) for b in self.boxes]
        return self.pooler(OrderedDict(zip(self.names, features)), boxes, [IMAGE])

    def ours(self, features: list[torch.Tensor]) -> torch.Tensor:
        boxes = [b.to(features[0].dtype) for b in self.boxes]
        return ops.multilevel_roi_align(features, boxes, self.size, SCALES, sampling_ratio=2)

    def floor_bytes(self, features: list[torch.Tensor], backward: bool) -> int:
        """Bytes a kernel must move at least (see the module docstring)."""
        elem = features[0].element_size()
        out = self.n * CHANNELS * self.size * self.size * elem
        if backward:
            return out + sum(f.numel() for f in features) * elem
        rois = torch.cat([torch.zeros(self.n, 1), self.boxes[0].cpu().float()], 1)
        shapes = [torch.empty(f.shape, device="meta") for f in features]
        _, total = _sampling.level_bases(shapes)
        levels = map_levels(rois, SCALES)
        geom = _sampling.level_geometry(shapes, SCALES, levels, rois[:, 0].long(), torch.float32)
        pooled = (self.size, self.size)
        sampling = _sampling.sampling(rois, geom, pooled, 2, False, torch.float32)
        touched = torch.zeros(total, dtype=torch.bool)
        for _, _, table in _cpu.sample_tables(sampling, geom, pooled, 2):
            touched[table.index[table.weight != 0]] = True
        return out + int(touched.sum()) * CHANNELS * elem


class MaskTargets:
    """Each of ``n`` boxes pools its matched gt mask (one full-image channel) to ``size`` x
    ``size`` with adaptive sampling, as ``torchvision.models.detection.roi_heads`` makes mask
    targets (``roi_align(gt_masks[:, None], rois, (M, M), 1.0)``)."""

    def __init__(self, n: int, n_masks: int, size: int, seed: int, device: str) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.n, self.size = n, size
        self.masks = (torch.rand(n_masks, 1, *IMAGE, generator=gen) > 0.5).float().to(device)
        matched = torch.randint(0, n_masks, (n, 1), generator=gen).float().to(device)
        self.rois = torch.cat([matched, make_boxes(n, seed, device)], 1)

    def torchvision(self, masks: torch.Tensor) -> torch.Tensor:
        return torchvision.ops.roi_align(masks, self.rois.to(masks.dtype), self.size, 1.0, -1)

    def ours(self, masks: torch.Tensor) -> torch.Tensor:
        return ops.roi_align(masks, self.rois.to(masks.dtype), self.size, 1.0, -1)


def time_cpu(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def time_cuda(fn: Callable[[], object], repeat: int) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def forward_fn(impl: Callable, features: list[torch.Tensor]) -> Callable[[], object]:
    def run():
        with torch.no_grad():
            return impl(features)

    return run


def backward_fn(impls: list[Callable], features: list[torch.Tensor]) -> Callable[[], object]:
    """The backward alone: the forward graph is built once and kept."""
    leaves = [f.detach().requires_grad_() for f in features]
    outs = [impl(leaves) for impl in impls]
    grads = [torch.randn_like(o) for o in outs]

    def run():
        for leaf in leaves:
            leaf.grad = None
        torch.autograd.backward(outs, grads, retain_graph=True)

    return run


def train_fn(impls: list[Callable], features: list[torch.Tensor]) -> Callable[[], object]:
    leaves = [f.detach().requires_grad_() for f in features]

    def run():
        for leaf in leaves:
            leaf.grad = None
        outs = [impl(leaves) for impl in impls]
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])

    return run


def copy_bandwidth() -> float:
    """Bytes per second of a 1 GiB device-to-device copy (read + write)."""
    src = torch.empty(1 << 28, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    ms = time_cuda(lambda: dst.copy_(src), 10)
    return 2 * src.numel() * 4 / (ms / 1e3)


def rows_for(device: str, dtype: torch.dtype, repeat: int, timer, bandwidth: float | None):
    features = make_features(device, dtype)
    box, mask = Case(1000, 7, 1, device), Case(100, 14, 2, device)
    train7, train14 = Case(512, 7, 3, device), Case(128, 14, 4, device)
    rows = []

    def row(name, tv_ms, ours_ms, floor_bytes=None):
        floor_ms = floor_bytes / bandwidth * 1e3 if bandwidth and floor_bytes else None
        rows.append((name, str(dtype).replace("torch.", ""), tv_ms, ours_ms, floor_ms))

    for label, case in (("box head 1000 -> 7x7, fwd", box), ("mask head 100 -> 14x14, fwd", mask)):
        tv = timer(forward_fn(case.torchvision, features), repeat)
        ours = timer(forward_fn(case.ours, features), repeat)
        row(label, tv, ours, case.floor_bytes(features, False))
        if device == "cuda":
            _cuda.READ_NCHW_IN_PLACE = True
            in_place = timer(forward_fn(case.ours, features), repeat)
            _cuda.READ_NCHW_IN_PLACE = False
            row(label.replace("fwd", "fwd, NCHW read in place"), tv, in_place, case.floor_bytes(features, False))
            cl = make_features(device, dtype, channels_last=True)
            row(
                label.replace("fwd", "fwd, channels-last maps"),
                tv,
                timer(forward_fn(case.ours, cl), repeat),
                case.floor_bytes(features, False),
            )
    tv_impls, our_impls = [train7.torchvision, train14.torchvision], [train7.ours, train14.ours]
    fwd_floor = train7.floor_bytes(features, False) + train14.floor_bytes(features, False)
    bwd_floor = train7.floor_bytes(features, True) + train14.floor_bytes(features, True)
    row(
        "training 512 -> 7x7 + 128 -> 14x14, fwd",
        timer(forward_fn(lambda f: [i(f) for i in tv_impls], features), repeat),
        timer(forward_fn(lambda f: [i(f) for i in our_impls], features), repeat),
        fwd_floor,
    )
    row(
        "training, bwd",
        timer(backward_fn(tv_impls, features), repeat),
        timer(backward_fn(our_impls, features), repeat),
        bwd_floor,
    )
    row(
        "training, fwd + bwd",
        timer(train_fn(tv_impls, features), repeat),
        timer(train_fn(our_impls, features), repeat),
        fwd_floor + bwd_floor,
    )
    targets = MaskTargets(128, 16, 28, 5, device)
    masks = targets.masks.to(dtype)
    row(
        "mask targets 128 -> 28x28, adaptive, fwd",
        timer(forward_fn(targets.torchvision, masks), repeat),
        timer(forward_fn(targets.ours, masks), repeat),
    )
    return rows


def print_table(title: str, rows, with_floor: bool) -> None:
    print(f"\n{title}")
    head = f"{'workload':<46} {'dtype':<8} {'torchvision ms':>14} {'ours ms':>9} {'speed-up':>9}"
    if with_floor:
        head += f" {'floor ms':>9} {'ours/floor':>10}"
    print(head)
    print("-" * len(head))
    for name, dtype, tv, ours, floor in rows:
        line = f"{name:<46} {dtype:<8} {tv:>14.2f} {ours:>9.2f} {tv / ours:>8.1f}x"
        if with_floor and floor:
            line += f" {floor:>9.3f} {ours / floor:>9.1f}x"
        print(line)


# (channels, output size, sampling ratio, box side, map side): around where the two CPU paths
# cross over, and the mask-target and FPN regimes on either side of it
CROSSOVER_CASES = [
    (c, p, sr, box, int(box * f))
    for c in (1, 4, 16, 64, 256)
    for p, sr, box in ((7, 2, 64), (14, 2, 128), (28, 2, 64), (7, 0, 32), (14, 0, 64), (28, 0, 200))
    for f in (1.25, 4)
]


def crossover(repeat: int) -> None:
    """Times both CPU paths on every RoI (ops._separable.PATH), per RoI, and says which one the cost
    model (ops._separable.path_costs) picks and how much slower that is than the faster of the two."""
    print(
        f"\nCPU ({torch.get_num_threads()} threads): gather vs separable path, float32, "
        f"channels-last maps, ms per 100 RoIs (median)"
    )
    head = (
        f"{'C':>4} {'bins':>6} {'sampling':>8} {'box':>4} {'map':>5} {'gather':>9} {'separable':>9} "
        f"{'picks':>10} {'pick/best':>9}"
    )
    print(head)
    print("-" * len(head))
    gen = torch.Generator().manual_seed(0)
    for c, p, sr, box, side in CROSSOVER_CASES:
        grid = sr if sr > 0 else -(-box // p)
        k = max(4, min(256, int(2e6 / (4 * p * p * grid * grid * (30 + c)))))
        x = torch.randn(1, c, box + 8, side, generator=gen).contiguous(memory_format=torch.channels_last)
        corner = torch.rand(k, 2, generator=gen) * torch.tensor([side - box, 8.0])
        rois = torch.cat([torch.zeros(k, 1), corner, corner + box], 1)
        times = {}
        pool = partial(ops.roi_align, x, rois, p, 1.0, sr, True)
        for path in ("gather", "separable"):
            _separable.PATH = path
            times[path] = time_cpu(pool, repeat) / k * 100
        _separable.PATH = None
        geom = _sampling.level_geometry([x], [1.0], None, rois[:, 0].long(), torch.float32)
        s = _sampling.sampling(rois, geom, (p, p), sr, True, torch.float32)
        gather_ns, separable_ns = (t.sum() for t in _separable.path_costs(s, geom, (p, p), c, sr > 0))
        pick = "separable" if separable_ns < gather_ns else "gather"
        sampling = f"{sr}" if sr > 0 else f"adapt {grid}"
        print(
            f"{c:>4} {f'{p}x{p}':>6} {sampling:>8} {box:>4} {side:>5} {times['gather']:>9.2f} "
            f"{times['separable']:>9.2f} {pick:>10} {times[pick] / min(times.values()):>8.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    devices = parser.add_mutually_exclusive_group()
    devices.add_argument("--cpu-only", action="store_true")
    devices.add_argument("--cuda-only", action="store_true")
    parser.add_argument("--repeat", type=int, default=0, help="timed repeats (default: 7 CPU, 25 CUDA)")
    parser.add_argument("--crossover", action="store_true", help="only the CPU paths' crossover table")
    args = parser.parse_args()
    if args.crossover:
        crossover(args.repeat or 5)
        return
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}; features P2-P5 of "
        f"{IMAGE[0]}x{IMAGE[1]}, {CHANNELS} channels, NCHW unless noted; sampling_ratio 2"
    )
    if not args.cuda_only:
        print_table(
            f"CPU ({torch.get_num_threads()} threads), float32, wall clock median",
            rows_for("cpu", torch.float32, args.repeat or 7, time_cpu, None),
            with_floor=False,
        )
    if torch.cuda.is_available() and not args.cpu_only:
        bandwidth = copy_bandwidth()
        name = torch.cuda.get_device_name()
        # ours is whatever serves the device: the kernels only where they passed their self-check
        ours = "NVRTC kernels" if _selfcheck.kernels_serve(torch.device("cuda")) else "portable path"
        rows = []
        for dtype in (torch.float32, torch.float16):
            rows += rows_for("cuda", dtype, args.repeat or 25, time_cuda, bandwidth)
        print_table(
            f"CUDA ({name}; device-to-device copy {bandwidth / 1e9:.0f} GB/s), ours: {ours}, CUDA events median",
            rows,
            with_floor=True,
        )
        print(
            "floor = (feature bytes touched + output bytes [fwd]; output-gradient bytes + input-gradient"
            " bytes [bwd]) / copy bandwidth"
        )
    else:
        print("\nCUDA: no GPU here, skipped")


if __name__ == "__main__":
    main()
