"""Where inference time goes on the CPU, stage by stage, beside the roofline (issue 19, items 3 and 6).

    python bench/cpu.py [--arch maskrcnn_resnet50_fpn] [--size 640x480] [--repeats 5]
                        [--precision auto|fp32|bf16] [--no-openvino] [--no-profile] [--quick]

One image, every stage timed separately in the same run, for torchvision fp32, ours fp32 (the
policy forced to float32: channels-last, batch norm folded), ours under the policy
(``model.precision``; ``auto`` is bfloat16 on a CPU with AMX or AVX512-BF16) and, when the
``openvino`` package is installed, ours with its networks (backbone+FPN, RPN head, box head MLP,
mask head convolutions) compiled by OpenVINO and the rest (RoIAlign, NMS, paste) in torch.

Stages: preprocess (to float, resize, normalise); backbone+FPN; RPN head (convolutions and anchors)
and RPN proposals (top-k, decoding, NMS per level); box head (RoIAlign, MLP, predictor) and box
decoding with NMS per class; mask head (RoIAlign, convolutions, the class's logits); keypoint head
when the architecture has one; paste (masks resampled to image size, thresholded, to bool).

Roofline: the sustained matrix-product rate in float32 and bfloat16 on the threads torch uses,
the best of a few large n x n x n products done two ways: ``torch.mm`` (MKL's sgemm in float32,
which on AMD processors takes a slower path than oneDNN) and the same product as a 1x1
convolution (oneDNN, what the network's convolutions run on); and each stage's floating-point
operations as ``torch.utils.flop_counter.FlopCounterMode`` counts them (convolutions and matrix
products) on ours in float32. Efficiency is those FLOPs / time / the peak of the dtype the stage
computes in (torchvision's column uses our count: what it does beyond it, such as mask logits of
all 91 classes, is not useful work). A 3x3 convolution can edge past the peak (oneDNN's direct
kernels reuse inputs better than a GEMM does). NMS and decoding count no FLOPs: no efficiency.

Also: the first box-to-mask after an image opens (``predict_in_box`` with the backbone not cached)
and the next one (cached features); and with ``--profile`` (default) torch.profiler's top operators
of everything after the backbone, for ours in float32 and under the policy.

Weights: torchvision's layout with the calibrated random weights of tests/model/reference.py,
loaded into ours and torchvision's, ``box_score_thresh=0`` so that 100 detections reach the mask
head and paste. Our own architectures (``maskrcnn_resnet18_fpn_small``) get their random
initialisation and no torchvision column. Runs alternate between the variants; medians reported.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# torch.profiler's tracer (Kineto) logs its start and stop to stderr unless told to keep quiet
os.environ.setdefault("KINETO_LOG_LEVEL", "5")

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torchvision  # noqa: E402
import torchvision.models.detection as tv_detection  # noqa: E402
from torchvision.models.detection.roi_heads import keypointrcnn_inference, maskrcnn_inference  # noqa: E402
from torchvision.models.detection.rpn import concat_box_prediction_layers  # noqa: E402

from model import Predictor, build_model  # noqa: E402
from model.builders import ARCHITECTURES  # noqa: E402
from model.precision import cpu_has_native_bf16  # noqa: E402
from model.roi_heads import fast_rcnn_inference  # noqa: E402
from model.synthetic import make_sample  # noqa: E402
from tests.model.reference import torchvision_reference  # noqa: E402

# a stage reads what earlier stages left in the state and adds its own outputs
State = dict[str, Any]
Stage = tuple[str, Callable[[State], None]]

BACKBONE = "backbone+FPN"
STAGES = (
    "preprocess",
    BACKBONE,
    "RPN head + anchors",
    "RPN proposals + NMS",
    "box head (RoIAlign, MLP)",
    "box decode + class NMS",
    "mask head (RoIAlign, convs)",
    "keypoint head",
    "paste to image size",
)
TOTAL = "total (sum of stages)"


@dataclass
class Variant:
    """One implementation: its stages, the context they run in, and the dtype it computes in."""

    name: str
    stages: list[Stage]
    context: Callable[[], contextlib.AbstractContextManager]
    dtype: str  # "fp32" or "bf16": whose matmul peak its efficiency is measured against
    predictor: Predictor | None = None  # ours: for the box-to-mask latency and the profile


@dataclass
class Results:
    """What one run measured; ``format_table`` prints it."""

    header: list[str]
    stages: list[str]
    gflop: dict[str, float]  # stage -> GFLOP (ours, float32 count)
    ms: dict[str, dict[str, float]]  # variant -> stage -> median ms
    dtypes: dict[str, str]  # variant -> "fp32" / "bf16"
    peaks: dict[str, float]  # "fp32" / "bf16" -> GFLOP/s, the best of the ways measured
    detections: dict[str, int]
    peak_ways: dict[str, dict[str, float]] = field(default_factory=dict)  # dtype -> way -> GFLOP/s
    box_to_mask: dict[str, tuple[float, float]] = field(default_factory=dict)  # variant -> (first, cached) ms
    profiles: dict[str, str] = field(default_factory=dict)  # variant -> torch.profiler table
    notes: list[str] = field(default_factory=list)

    def efficiency(self, variant: str, stage: str) -> float | None:
        """Percent of the matmul peak of the variant's dtype; None for a stage with no FLOPs."""
        ms = self.ms[variant].get(stage)
        flops = self.gflop.get(stage, 0.0)
        if ms is None or flops <= 0:
            return None
        return 100 * flops / (ms / 1000) / self.peaks[self.dtypes[variant]]


# -- roofline ---------------------------------------------------------------------------------


def matmul_peak_gflops(dtype: torch.dtype, size: int, repeats: int = 3) -> dict[str, float]:
    """Sustained GFLOP/s of one ``size`` x ``size`` x ``size`` matrix product (2 size^3 FLOPs), the
    best of ``repeats`` after a warm-up, as ``torch.mm`` and as a 1x1 convolution (channels-last:
    the image's ``size`` pixels are the rows, the channels the inner dimension)."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    pixels = a.t().reshape(1, size, size // 64, 64).contiguous(memory_format=torch.channels_last)
    weight = b.t().reshape(size, size, 1, 1).contiguous(memory_format=torch.channels_last)
    ways = {"torch.mm": lambda: torch.mm(a, b), "1x1 conv": lambda: torch.nn.functional.conv2d(pixels, weight)}
    rates = {}
    with torch.inference_mode():
        for way, product in ways.items():
            product()
            best = math.inf
            for _ in range(repeats):
                start = time.perf_counter()
                product()
                best = min(best, time.perf_counter() - start)
            rates[way] = 2 * size**3 / best / 1e9
    return rates


def count_gflop(variant: Variant, image: np.ndarray) -> dict[str, float]:
    """GFLOP of each stage of one run, as FlopCounterMode counts them."""
    state: State = {"image": image}
    counts = {}
    with variant.context():
        for name, run in variant.stages:
            counter = FlopCounterMode(display=False)
            with counter:
                run(state)
            counts[name] = counter.get_total_flops() / 1e9
    return counts


# -- the stages -------------------------------------------------------------------------------


def to_tensor(image: np.ndarray) -> Tensor:
    """H x W x 3 uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div_(255)


def our_stages(p: Predictor) -> list[Stage]:
    """The stages of ``Predictor.predict``, as ``MaskRCNN.detect`` and ``RoIHeads.forward`` chain
    them; ``paste`` is the Predictor's own (scale, paste in chunks, threshold, to the CPU)."""
    model, heads = p.model, p.model.roi_heads

    def preprocess(s: State) -> None:
        s["batch"] = model.preprocess([to_tensor(s["image"])])

    def backbone(s: State) -> None:
        s["features"] = model.extract_features(s["batch"])

    def rpn_head(s: State) -> None:
        s["rpn"] = model.rpn._predict(s["features"], s["batch"].padded_size)

    def rpn_proposals(s: State) -> None:
        s["proposals"], _ = model.rpn.select_proposals(*s["rpn"], s["batch"].image_sizes)

    def box_head(s: State) -> None:
        s["box"] = heads.classify(s["features"], s["proposals"])

    def box_nms(s: State) -> None:
        proposals = s["proposals"][0]
        s["detections"] = fast_rcnn_inference(
            *s["box"],
            proposals,
            proposals.new_zeros(proposals.shape[0], dtype=torch.int64),  # one image
            s["batch"].image_sizes,
            heads.bbox_reg_weights,
            heads.score_thresh,
            heads.nms_thresh,
            heads.detections_per_img,
        )

    def mask_head(s: State) -> None:
        detections = s["detections"]
        detections.masks = heads.predict_masks(s["features"], [detections.boxes], detections.labels)

    def keypoint_head(s: State) -> None:
        detections = s["detections"]
        detections.keypoints, detections.keypoint_scores = heads.predict_detected_keypoints(
            s["features"], [detections.boxes]
        )

    def paste(s: State) -> None:
        s["found"] = len(p._instances(s["detections"], s["batch"], 0, None))

    stages = [preprocess, backbone, rpn_head, rpn_proposals, box_head, box_nms]
    stages += [mask_head] if heads.has_mask else []
    stages += [keypoint_head] if heads.has_keypoint else []
    return [(_stage_name(fn.__name__), fn) for fn in [*stages, paste]]


def torchvision_stages(tv: nn.Module) -> list[Stage]:
    """The same stages of torchvision's ``MaskRCNN.forward`` (its RPN's and RoI heads' forward
    taken apart at the same points), masks thresholded at 0.5 as the Predictor does."""
    rpn, heads = tv.rpn, tv.roi_heads

    def preprocess(s: State) -> None:
        x = to_tensor(s["image"])
        s["original"] = [tuple(x.shape[-2:])]
        s["images"], _ = tv.transform([x])

    def backbone(s: State) -> None:
        s["features"] = tv.backbone(s["images"].tensors)

    def rpn_head(s: State) -> None:
        levels = list(s["features"].values())
        s["rpn"] = (*rpn.head(levels), rpn.anchor_generator(s["images"], levels))

    def rpn_proposals(s: State) -> None:
        objectness, deltas, anchors = s["rpn"]
        per_level = [o[0].numel() for o in objectness]  # anchors per level, as torchvision counts them
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = rpn.box_coder.decode(deltas, anchors).view(len(anchors), -1, 4)
        s["proposals"], _ = rpn.filter_proposals(proposals, objectness, s["images"].image_sizes, per_level)

    def box_head(s: State) -> None:
        x = heads.box_roi_pool(s["features"], s["proposals"], s["images"].image_sizes)
        s["box"] = heads.box_predictor(heads.box_head(x))

    def box_nms(s: State) -> None:
        boxes, scores, labels = heads.postprocess_detections(*s["box"], s["proposals"], s["images"].image_sizes)
        s["result"] = [{"boxes": boxes[0], "scores": scores[0], "labels": labels[0]}]

    def mask_head(s: State) -> None:
        result = s["result"][0]
        x = heads.mask_roi_pool(s["features"], [result["boxes"]], s["images"].image_sizes)
        result["masks"] = maskrcnn_inference(heads.mask_predictor(heads.mask_head(x)), [result["labels"]])[0]

    def keypoint_head(s: State) -> None:
        result = s["result"][0]
        x = heads.keypoint_roi_pool(s["features"], [result["boxes"]], s["images"].image_sizes)
        logits = heads.keypoint_predictor(heads.keypoint_head(x))
        keypoints, scores = keypointrcnn_inference(logits, [result["boxes"]])
        result["keypoints"], result["keypoints_scores"] = keypoints[0], scores[0]

    def paste(s: State) -> None:
        out = tv.transform.postprocess(s["result"], s["images"].image_sizes, s["original"])[0]
        if "masks" in out:
            out["masks"] = (out["masks"][:, 0] >= 0.5).cpu()
        s["found"] = len(out["boxes"].cpu())

    stages = [preprocess, backbone, rpn_head, rpn_proposals, box_head, box_nms]
    stages += [mask_head] if heads.has_mask() else []
    stages += [keypoint_head] if heads.has_keypoint() else []
    return [(_stage_name(fn.__name__), fn) for fn in [*stages, paste]]


def _stage_name(function: str) -> str:
    order = ("preprocess", "backbone", "rpn_head", "rpn_proposals", "box_head", "box_nms", "mask_head")
    return STAGES[[*order, "keypoint_head", "paste"].index(function)]


# -- OpenVINO ---------------------------------------------------------------------------------


class _Flat(nn.Module):
    """``module`` with tensors as positional inputs and outputs (OpenVINO converts those): its
    list input is ``list_input`` tensors long, its output lists are flattened."""

    def __init__(self, module: nn.Module, list_input: bool) -> None:
        super().__init__()
        self.module, self.list_input = module, list_input

    def forward(self, *inputs: Tensor) -> Any:
        out = self.module(list(inputs)) if self.list_input else self.module(*inputs)
        if isinstance(out, Tensor):
            return out
        return tuple(x for item in out for x in (item if isinstance(item, list | tuple) else [item]))


class _OpenVINONetwork(nn.Module):
    """A network compiled by OpenVINO in place of a torch module: the module's inputs in, its
    outputs out (``nested``: the lengths of its output lists; None for one tensor)."""

    def __init__(self, compiled: Any, nested: list[int] | None) -> None:
        super().__init__()
        self.request = compiled.create_infer_request()
        self.outputs = len(compiled.outputs)
        self.nested = nested

    def forward(self, *inputs: Tensor | list[Tensor]) -> Any:
        flat = [x for item in inputs for x in (item if isinstance(item, list) else [item])]
        self.request.infer([x.float().contiguous().numpy() for x in flat])
        # copied: the request reuses its output buffers on the next call
        outputs = [torch.from_numpy(self.request.get_output_tensor(i).data.copy()) for i in range(self.outputs)]
        if self.nested is None:
            return outputs[0]
        lists = [outputs[sum(self.nested[:i]) : sum(self.nested[: i + 1])] for i in range(len(self.nested))]
        return lists[0] if len(lists) == 1 else tuple(lists)


def openvino_predictor(p: Predictor, image: np.ndarray) -> tuple[Predictor | None, str]:
    """A float32 predictor like ``p`` whose backbone+FPN, RPN head, box head (MLP) and mask head
    (convolutions) run in OpenVINO, RoIAlign, NMS and paste in torch; None and why when it cannot."""
    try:
        import openvino as ov
    except ImportError:
        return None, "OpenVINO: not installed"
    model = copy.deepcopy(p.model).to(memory_format=torch.contiguous_format)
    heads = model.roi_heads
    with torch.no_grad():
        batch = model.preprocess([to_tensor(image)])
        features = [f.contiguous() for f in model.backbone(batch.tensor)]
        channels = features[0].shape[1]
        # (module, example inputs, input is a list, output list lengths or None)
        networks: dict[str, tuple[nn.Module, tuple[Tensor, ...], bool, list[int] | None]] = {
            "backbone": (model.backbone, (batch.tensor,), False, [len(features)]),
            "rpn.head": (model.rpn.head, tuple(features), True, [len(features)] * 2),
            "roi_heads.box_head": (heads.box_head, (torch.randn(3, channels, 7, 7),), False, None),
        }
        if heads.has_mask:
            networks["roi_heads.mask_head"] = (heads.mask_head, (torch.randn(3, channels, 14, 14),), False, None)
        core, precision = ov.Core(), ""
        for path, (module, example, list_input, nested) in networks.items():
            with warnings.catch_warnings():  # torch.jit.trace's deprecation, once per network
                warnings.simplefilter("ignore", FutureWarning)
                converted = ov.convert_model(_Flat(module, list_input), example_input=example)
            compiled = core.compile_model(converted, "CPU")
            precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
            owner_path, _, attribute = path.rpartition(".")
            setattr(model.get_submodule(owner_path), attribute, _OpenVINONetwork(compiled, nested))
    # the backbone is no longer a torch module whose memory format extract_features can ask
    model.extract_features = lambda batch: model.backbone(batch.tensor)
    ours = Predictor(model, device="cpu", precision="fp32", channels_last=False, fold_batch_norm=False)
    return ours, f"OpenVINO {ov.__version__}, inference precision {precision}"


# -- measuring --------------------------------------------------------------------------------


def build_variants(arch: str, image: np.ndarray, precision: str, openvino: bool, notes: list[str]) -> list[Variant]:
    """torchvision fp32 (when it has ``arch``), ours fp32, ours under ``precision`` (when that is
    not float32) and OpenVINO (when asked for and installed), all with the same weights."""
    overrides = {"box_score_thresh": 0.0}  # every detection up to detections_per_img is kept
    variants = []
    if hasattr(tv_detection, arch):
        tv = torchvision_reference(arch, [to_tensor(image)], random_batchnorm=False, **overrides)
        state = tv.state_dict()
        variants.append(Variant("torchvision fp32", torchvision_stages(tv), torch.inference_mode, "fp32"))
    else:
        torch.manual_seed(0)
        state = build_model(arch, **overrides).state_dict()
        notes.append(f"torchvision: no builder for {arch} (its random initialisation, no torchvision column)")

    def predictor(precision: str) -> Predictor:
        ours = build_model(arch, **overrides)
        ours.load_state_dict(state, strict=True)
        # the Predictor folds the batch norms of weights it loads itself; these it is handed
        return Predictor(ours, device="cpu", precision=precision, fold_batch_norm=True)

    fp32 = predictor("fp32")
    variants.append(_ours("ours fp32", fp32))
    policy = predictor(precision)
    if policy.policy.precision != "fp32":
        variants.append(_ours(f"ours {policy.policy.precision}", policy))
    if openvino:
        compiled, note = openvino_predictor(fp32, image)
        notes.append(note)
        if compiled is not None:
            dtype = "bf16" if "bf" in note.lower() else "fp32"
            variants.append(Variant(f"OpenVINO {dtype}", our_stages(compiled), torch.inference_mode, dtype))
    else:
        notes.append("OpenVINO: not run (--no-openvino)")
    return variants


def _ours(name: str, p: Predictor) -> Variant:
    @contextlib.contextmanager
    def context() -> Iterator[None]:
        # what Predictor.predict runs under (without its lock)
        with torch.inference_mode(), p.policy.autocast():
            yield

    return Variant(name, our_stages(p), context, "bf16" if p.policy.precision == "bf16" else "fp32", p)


def run_once(variant: Variant, image: np.ndarray) -> tuple[dict[str, float], State]:
    """Each stage's milliseconds in one run, and the state it ends in."""
    state: State = {"image": image}
    times = {}
    with variant.context():
        for name, run in variant.stages:
            start = time.perf_counter()
            run(state)
            times[name] = (time.perf_counter() - start) * 1000
    return times, state


def box_to_mask_ms(p: Predictor, image: np.ndarray, repeats: int) -> tuple[float, float]:
    """Median ms of ``predict_in_box`` on a newly opened image (backbone not cached) and of the
    next box on the same image (cached features)."""
    height, width = image.shape[:2]
    box = (0.2 * width, 0.25 * height, 0.6 * width, 0.85 * height)
    first, cached = [], []
    for _ in range(repeats):
        p.clear_cache()
        for times in (first, cached):
            start = time.perf_counter()
            p.predict_in_box(image, box)
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(first), statistics.median(cached)


def profile_after_backbone(variant: Variant, image: np.ndarray, rows: int) -> str:
    """torch.profiler's operators of one run after the backbone (RPN to paste), by self CPU time;
    each stage is a ``record_function`` range of its own name."""
    state: State = {"image": image}
    with variant.context():
        for _, run in variant.stages[:2]:  # preprocess, backbone+FPN: not profiled
            run(state)
        for _, run in variant.stages[2:]:  # once unprofiled: the profiled run finds every primitive built
            run(state)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            for name, run in variant.stages[2:]:
                with torch.profiler.record_function(name):
                    run(state)
    return profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=44)


def measure(
    arch: str,
    image: np.ndarray,
    *,
    precision: str = "auto",
    repeats: int = 5,
    warmup: int = 2,
    peak_size: int = 4096,
    openvino: bool = True,
    profile_rows: int = 15,
) -> Results:
    """Everything ``main`` prints, for one architecture and image."""
    notes: list[str] = []
    variants = build_variants(arch, image, precision, openvino, notes)
    peak_ways = {
        name: matmul_peak_gflops(dtype, peak_size)
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    peaks = {name: max(ways.values()) for name, ways in peak_ways.items()}
    ours32 = next(v for v in variants if v.name == "ours fp32")
    gflop = count_gflop(ours32, image)
    detections = {}
    for _ in range(warmup):  # allocator, oneDNN primitives, OpenVINO's first inferences
        for variant in variants:
            detections[variant.name] = run_once(variant, image)[1]["found"]
    samples: dict[str, dict[str, list[float]]] = {v.name: {} for v in variants}
    for _ in range(repeats):  # alternating, so that background load hits all alike
        for variant in variants:
            for stage, ms in run_once(variant, image)[0].items():
                samples[variant.name].setdefault(stage, []).append(ms)
    ms = {name: {stage: statistics.median(t) for stage, t in times.items()} for name, times in samples.items()}
    stages = [s for s in STAGES if any(s in times for times in ms.values())]
    results = Results(
        header=_header(arch, image, precision, repeats, peak_size),
        stages=stages,
        gflop=gflop,
        ms=ms,
        dtypes={v.name: v.dtype for v in variants},
        peaks=peaks,
        peak_ways=peak_ways,
        detections=detections,
        notes=notes,
    )
    for variant in variants:
        if variant.predictor is not None:
            results.box_to_mask[variant.name] = box_to_mask_ms(variant.predictor, image, max(repeats, 3))
            if profile_rows:
                results.profiles[variant.name] = profile_after_backbone(variant, image, profile_rows)
    for times in results.ms.values():
        if all(stage in times for stage in stages):
            times[TOTAL] = sum(times[stage] for stage in stages)
    results.gflop[TOTAL] = sum(results.gflop.get(stage, 0.0) for stage in stages)
    return results


def _header(arch: str, image: np.ndarray, precision: str, repeats: int, peak_size: int) -> list[str]:
    height, width = image.shape[:2]
    config = ARCHITECTURES[arch]
    return [
        f"{arch}, one {width}x{height} synthetic image resized to a shorter side of {config.test_min_size} "
        f"(at most {config.max_size}), box_score_thresh=0, {config.box_detections_per_img} detections at most; "
        f"median of {repeats} alternating runs, --precision {precision}",
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} CPU threads, "
        f"native bfloat16 on this CPU: {'yes' if cpu_has_native_bf16() else 'no'}",
        f"efficiency: FLOPs counted by FlopCounterMode on ours in float32 / time / the matmul peak "
        f"({peak_size}^3, the best of torch.mm and a 1x1 convolution) of the dtype the variant computes in",
    ]


# -- printing ---------------------------------------------------------------------------------


def format_table(results: Results) -> str:
    """The stage table, ours and the reference side by side, then the box-to-mask latencies."""
    names = list(results.ms)
    rows = [["stage", "GFLOP", *[cell for name in names for cell in (f"{name} ms", "eff %")]]]
    for stage in [*results.stages, TOTAL]:
        row = [stage, f"{results.gflop.get(stage, 0.0):.1f}"]
        for name in names:
            ms = results.ms[name].get(stage)
            efficiency = results.efficiency(name, stage)
            row += [f"{ms:.1f}" if ms is not None else "n/a", f"{efficiency:.1f}" if efficiency is not None else "-"]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)) for r in rows]
    peaks = "; ".join(
        f"{dtype} {results.peaks[dtype]:.0f} GFLOP/s ({', '.join(f'{way} {rate:.0f}' for way, rate in ways.items())})"
        for dtype, ways in results.peak_ways.items()
    )
    lines += ["", f"matmul peak ({torch.get_num_threads()} threads): {peaks}"]
    lines.append("detections: " + ", ".join(f"{name} {count}" for name, count in results.detections.items()))
    for name, (first, cached) in results.box_to_mask.items():
        lines.append(
            f"{name}: first box-to-mask after an image opens {first:.1f} ms, next box (cached) {cached:.1f} ms"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> Results:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="maskrcnn_resnet50_fpn", choices=list(ARCHITECTURES))
    parser.add_argument("--size", default="640x480", help="image W x H")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant (median)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="the policy column")
    parser.add_argument("--no-openvino", action="store_true", help="leave OpenVINO out even when installed")
    parser.add_argument("--no-profile", action="store_true", help="no torch.profiler listing")
    parser.add_argument("--quick", action="store_true", help="one run, small matmul peak, short profile (tests)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    image = make_sample(np.random.default_rng(0), height, width, min_shapes=4, max_shapes=8)[0]
    quick = {"repeats": 1, "warmup": 1, "peak_size": 1024, "profile_rows": 5} if args.quick else {}
    options: dict[str, Any] = {"repeats": args.repeats, "warmup": 2, "peak_size": 4096, "profile_rows": 15} | quick
    if args.no_profile:
        options["profile_rows"] = 0
    results = measure(args.arch, image, precision=args.precision, openvino=not args.no_openvino, **options)
    print("\n".join([*results.header, *results.notes, "", format_table(results)]))
    for name, table in results.profiles.items():
        print(f"\n{name}: top operators after the backbone (RPN to paste), by self CPU time\n{table}")
    return results


if __name__ == "__main__":
    main()
