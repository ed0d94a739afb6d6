"""RoIAlign (Mask R-CNN) as PyTorch custom operators, single-level and over all FPN levels at once.

Semantics are those of ``torchvision.ops.roi_align`` and ``torchvision.ops.MultiScaleRoIAlign``.
Operators, in the ``maskrcnn_ops`` namespace:

- ``roi_align`` / ``roi_align_backward``
- ``multilevel_roi_align`` / ``multilevel_roi_align_backward``

Each has a fake (meta) implementation for ``torch.compile``, autograd, a CUDA kernel (NVRTC,
``ops/roi_align.cu``), and a PyTorch implementation (``ops/_cpu.py``) that is the CPU kernel and
serves every other device. On a CUDA device the kernels run once they have agreed with the PyTorch
implementation there (``ops/_selfcheck.py``; ``MASKRCNN_ROI_ALIGN=cuda|portable`` forces a path).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ops import _cpu, _cuda, _selfcheck
from ops._levels import level_range, map_levels

__all__ = ["roi_align", "multilevel_roi_align", "map_levels"]


def roi_align(
    input: Tensor,
    boxes: Tensor | Sequence[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoIAlign with average pooling (Mask R-CNN), as ``torchvision.ops.roi_align``.

    Args:
        input: (N, C, H, W) feature map, NCHW or channels-last; float64/32/16 or bfloat16.
        boxes: (K, 5) rows ``[batch_index, x1, y1, x2, y2]``, or a list of N tensors (K_i, 4) of
            ``[x1, y1, x2, y2]``, in the coordinates that ``spatial_scale`` maps to the map.
        output_size: PH or (PH, PW) bins.
        spatial_scale: map pixels per box unit (e.g. 1/16 for stride 16).
        sampling_ratio: sampling points per bin side; <= 0 means ``ceil(roi_size / bins)``.
        aligned: False: legacy (boxes at least 1 pixel, pixel centres at integers); True: box
            coordinates shifted by -0.5 so that pixel centres sit at +0.5 (Detectron2).
    Returns:
        (K, C, PH, PW), the input's dtype, contiguous. Sampling points off the map give 0.
    """
    ph, pw = _pair(output_size)
    rois = _as_rois(boxes, input)
    return torch.ops.maskrcnn_ops.roi_align(
        input, rois, float(spatial_scale), ph, pw, int(sampling_ratio), bool(aligned)
    )


def multilevel_roi_align(
    features: Sequence[Tensor],
    boxes: Tensor | Sequence[Tensor],
    output_size: int | tuple[int, int],
    scales: Sequence[float],
    sampling_ratio: int = 2,
    aligned: bool = False,
    canonical_scale: int = 224,
    canonical_level: int = 4,
) -> Tensor:
    """RoIAlign of each box on its FPN level, as ``torchvision.ops.MultiScaleRoIAlign``.

    A box of area A goes to level ``floor(canonical_level + log2(sqrt(A) / canonical_scale))``,
    clamped to the levels present (level k has scale 2**-k). On CUDA all levels are one kernel
    launch with no host synchronisation.

    Args:
        features: FPN maps (N, C, H_l, W_l), finest first (e.g. P2-P5), one dtype and device.
        boxes: list of N tensors (K_i, 4) ``[x1, y1, x2, y2]`` in image coordinates (or a (K, 5)
            tensor with the batch index first).
        output_size: PH or (PH, PW) bins.
        scales: each map's scale, e.g. ``[1/4, 1/8, 1/16, 1/32]``.
        sampling_ratio, aligned: as in :func:`roi_align`.
        canonical_scale, canonical_level: a box of side ``canonical_scale`` goes to this level.
    Returns:
        (K, C, PH, PW) for the boxes of all images in order, the features' dtype.
    """
    if len(features) != len(scales):
        raise ValueError(f"{len(features)} feature maps but {len(scales)} scales")
    # under autocast, levels may come out in different dtypes; the result takes the first one's
    features = [f.to(features[0].dtype) for f in features]
    ph, pw = _pair(output_size)
    rois = _as_rois(boxes, features[0])
    if len(features) == 1:
        return torch.ops.maskrcnn_ops.roi_align(
            features[0], rois, float(scales[0]), ph, pw, int(sampling_ratio), bool(aligned)
        )
    return torch.ops.maskrcnn_ops.multilevel_roi_align(
        features,
        rois,
        [float(s) for s in scales],
        ph,
        pw,
        int(sampling_ratio),
        bool(aligned),
        int(canonical_scale),
        int(canonical_level),
    )


def _pair(output_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(output_size, int):
        return output_size, output_size
    ph, pw = output_size
    return int(ph), int(pw)


def _as_rois(boxes: Tensor | Sequence[Tensor], like: Tensor) -> Tensor:
    """(K, 5) ``[batch_index, x1, y1, x2, y2]`` from a (K, 5) tensor or per-image (K_i, 4) boxes."""
    if isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(f"boxes as a tensor must be (K, 5), got {tuple(boxes.shape)}")
        return boxes
    boxes = list(boxes)
    for b in boxes:
        if b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(f"per-image boxes must be (K_i, 4), got {tuple(b.shape)}")
    if not boxes:
        dtype = like.dtype if like.is_floating_point() else torch.float32
        return torch.zeros(0, 5, dtype=dtype, device=like.device)
    concat = torch.cat(boxes, 0)
    ids = torch.cat([torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)], 0)
    return torch.cat([ids, concat], 1)


def _check(input: Tensor, rois: Tensor, pooled_height: int, pooled_width: int) -> None:
    torch._check(input.dim() == 4, lambda: f"input must be (N, C, H, W), got {input.dim()} dims")
    torch._check(rois.dim() == 2 and rois.shape[1] == 5, lambda: "rois must be (K, 5)")
    torch._check(input.is_floating_point(), lambda: f"input must be floating point, got {input.dtype}")
    torch._check(rois.is_floating_point(), lambda: f"rois must be floating point, got {rois.dtype}")
    torch._check(pooled_height > 0 and pooled_width > 0, lambda: "output_size must be positive")
    torch._check(input.device == rois.device, lambda: "input and rois must be on one device")


def _is_channels_last(t: Tensor) -> bool:
    return _cpu._is_channels_last(t)


def _kernel_or_portable(device: torch.device, run_kernel, run_portable):
    """The NVRTC kernels where they serve ``device`` (``ops/_selfcheck.py``), else the PyTorch path."""
    return run_kernel() if _selfcheck.kernels_serve(device) else run_portable()


# --- maskrcnn_ops::roi_align -------------------------------------------------------------------


@torch.library.custom_op("maskrcnn_ops::roi_align", mutates_args=())
def _roi_align(
    input: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    _check(input, rois, pooled_height, pooled_width)
    return _cpu.forward([input], rois, [spatial_scale], None, (pooled_height, pooled_width), sampling_ratio, aligned)


@_roi_align.register_fake
def _(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    _check(input, rois, pooled_height, pooled_width)
    return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))


@_roi_align.register_kernel("cuda")
def _roi_align_cuda(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    _check(input, rois, pooled_height, pooled_width)
    args = ((pooled_height, pooled_width), sampling_ratio, aligned)
    return _kernel_or_portable(
        input.device,
        lambda: _cuda.forward([input], rois, [spatial_scale], None, 224, 4, *args),
        lambda: _cpu.forward([input], rois, [spatial_scale], None, *args),
    )


@torch.library.custom_op("maskrcnn_ops::roi_align_backward", mutates_args=())
def _roi_align_backward(
    grad: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
    channels_last: bool,
) -> Tensor:
    like = _shape_like(grad, batch_size, channels, height, width, channels_last)
    return _cpu.backward(
        grad,
        [like],
        rois,
        [spatial_scale],
        None,
        (pooled_height, pooled_width),
        sampling_ratio,
        aligned,
    )[0]


@_roi_align_backward.register_fake
def _(
    grad,
    rois,
    spatial_scale,
    pooled_height,
    pooled_width,
    sampling_ratio,
    aligned,
    batch_size,
    channels,
    height,
    width,
    channels_last,
):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return grad.new_empty((batch_size, channels, height, width)).contiguous(memory_format=fmt)


@_roi_align_backward.register_kernel("cuda")
def _roi_align_backward_cuda(
    grad,
    rois,
    spatial_scale,
    pooled_height,
    pooled_width,
    sampling_ratio,
    aligned,
    batch_size,
    channels,
    height,
    width,
    channels_last,
):
    args = ((pooled_height, pooled_width), sampling_ratio, aligned)
    like = _shape_like(grad, batch_size, channels, height, width, channels_last)
    return _kernel_or_portable(
        grad.device,
        lambda: _cuda.backward(
            grad, rois, [spatial_scale], None, 224, 4, batch_size, channels, [height], [width], [channels_last], *args
        )[0],
        lambda: _cpu.backward(grad, [like], rois, [spatial_scale], None, *args)[0],
    )


def _shape_like(grad: Tensor, n: int, c: int, h: int, w: int, channels_last: bool) -> Tensor:
    """A meta tensor (no storage) carrying a map's shape, dtype and memory format."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty((n, c, h, w), dtype=grad.dtype, device="meta").contiguous(memory_format=fmt)


def _roi_align_setup(ctx, inputs, output):
    input, rois, spatial_scale, ph, pw, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.args = (spatial_scale, ph, pw, sampling_ratio, aligned)
    ctx.input_shape = tuple(input.shape)
    ctx.channels_last = _is_channels_last(input)


def _roi_align_grad(ctx, grad):
    (rois,) = ctx.saved_tensors
    n, c, h, w = ctx.input_shape
    grad_input = torch.ops.maskrcnn_ops.roi_align_backward(grad, rois, *ctx.args, n, c, h, w, ctx.channels_last)
    return grad_input, None, None, None, None, None, None


torch.library.register_autograd("maskrcnn_ops::roi_align", _roi_align_grad, setup_context=_roi_align_setup)


def _roi_align_backward_setup(ctx, inputs, output):
    _, rois, spatial_scale, ph, pw, sampling_ratio, aligned = inputs[:7]
    ctx.save_for_backward(rois)
    ctx.args = (spatial_scale, ph, pw, sampling_ratio, aligned)


def _roi_align_backward_grad(ctx, grad_grad_input):
    # the backward is linear in ``grad``, with the forward as its adjoint
    (rois,) = ctx.saved_tensors
    gg = torch.ops.maskrcnn_ops.roi_align(grad_grad_input, rois, *ctx.args)
    return (gg,) + (None,) * 11


torch.library.register_autograd(
    "maskrcnn_ops::roi_align_backward",
    _roi_align_backward_grad,
    setup_context=_roi_align_backward_setup,
)


# --- maskrcnn_ops::multilevel_roi_align --------------------------------------------------------


@torch.library.custom_op("maskrcnn_ops::multilevel_roi_align", mutates_args=())
def _multilevel_roi_align(
    features: list[Tensor],
    rois: Tensor,
    scales: list[float],
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
    canonical_scale: int,
    canonical_level: int,
) -> Tensor:
    _check_levels(features, rois, scales, pooled_height, pooled_width)
    levels = map_levels(rois, scales, canonical_scale, canonical_level)
    return _cpu.forward(features, rois, scales, levels, (pooled_height, pooled_width), sampling_ratio, aligned)


@_multilevel_roi_align.register_fake
def _(features, rois, scales, pooled_height, pooled_width, sampling_ratio, aligned, canonical_scale, canonical_level):
    _check_levels(features, rois, scales, pooled_height, pooled_width)
    return features[0].new_empty((rois.shape[0], features[0].shape[1], pooled_height, pooled_width))


@_multilevel_roi_align.register_kernel("cuda")
def _multilevel_roi_align_cuda(
    features, rois, scales, pooled_height, pooled_width, sampling_ratio, aligned, canonical_scale, canonical_level
):
    _check_levels(features, rois, scales, pooled_height, pooled_width)
    args = ((pooled_height, pooled_width), sampling_ratio, aligned)
    return _kernel_or_portable(
        rois.device,
        lambda: _cuda.forward(features, rois, scales, level_range(scales), canonical_scale, canonical_level, *args),
        lambda: _cpu.forward(features, rois, scales, map_levels(rois, scales, canonical_scale, canonical_level), *args),
    )


def _check_levels(features, rois, scales, pooled_height, pooled_width) -> None:
    torch._check(len(features) == len(scales) and len(features) > 0, lambda: "one scale per map")
    for f in features:
        _check(f, rois, pooled_height, pooled_width)
        torch._check(f.dtype == features[0].dtype, lambda: "feature maps must share a dtype")
        torch._check(f.shape[:2] == features[0].shape[:2], lambda: "maps must share N and C")


@torch.library.custom_op("maskrcnn_ops::multilevel_roi_align_backward", mutates_args=())
def _multilevel_roi_align_backward(
    grad: Tensor,
    rois: Tensor,
    scales: list[float],
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
    canonical_scale: int,
    canonical_level: int,
    batch_size: int,
    channels: int,
    heights: list[int],
    widths: list[int],
    channels_last: list[bool],
) -> list[Tensor]:
    likes = [_shape_like(grad, batch_size, channels, h, w, cl) for h, w, cl in zip(heights, widths, channels_last)]
    levels = map_levels(rois, scales, canonical_scale, canonical_level)
    return _cpu.backward(grad, likes, rois, scales, levels, (pooled_height, pooled_width), sampling_ratio, aligned)


@_multilevel_roi_align_backward.register_fake
def _(
    grad,
    rois,
    scales,
    pooled_height,
    pooled_width,
    sampling_ratio,
    aligned,
    canonical_scale,
    canonical_level,
    batch_size,
    channels,
    heights,
    widths,
    channels_last,
):
    return [
        grad.new_empty((batch_size, channels, h, w)).contiguous(
            memory_format=torch.channels_last if cl else torch.contiguous_format
        )
        for h, w, cl in zip(heights, widths, channels_last)
    ]


@_multilevel_roi_align_backward.register_kernel("cuda")
def _multilevel_roi_align_backward_cuda(
    grad,
    rois,
    scales,
    pooled_height,
    pooled_width,
    sampling_ratio,
    aligned,
    canonical_scale,
    canonical_level,
    batch_size,
    channels,
    heights,
    widths,
    channels_last,
):
    args = ((pooled_height, pooled_width), sampling_ratio, aligned)
    likes = [_shape_like(grad, batch_size, channels, h, w, cl) for h, w, cl in zip(heights, widths, channels_last)]
    return _kernel_or_portable(
        grad.device,
        lambda: _cuda.backward(
            grad,
            rois,
            scales,
            level_range(scales),
            canonical_scale,
            canonical_level,
            batch_size,
            channels,
            heights,
            widths,
            channels_last,
            *args,
        ),
        lambda: _cpu.backward(
            grad, likes, rois, scales, map_levels(rois, scales, canonical_scale, canonical_level), *args
        ),
    )


def _multilevel_setup(ctx, inputs, output):
    features, rois = inputs[0], inputs[1]
    ctx.save_for_backward(rois)
    ctx.args = tuple(inputs[2:])
    ctx.batch_size, ctx.channels = features[0].shape[:2]
    ctx.heights = [f.shape[2] for f in features]
    ctx.widths = [f.shape[3] for f in features]
    ctx.channels_last = [_is_channels_last(f) for f in features]


def _multilevel_grad(ctx, grad):
    (rois,) = ctx.saved_tensors
    grads = torch.ops.maskrcnn_ops.multilevel_roi_align_backward(
        grad,
        rois,
        *ctx.args,
        ctx.batch_size,
        ctx.channels,
        ctx.heights,
        ctx.widths,
        ctx.channels_last,
    )
    return (list(grads),) + (None,) * 8


torch.library.register_autograd("maskrcnn_ops::multilevel_roi_align", _multilevel_grad, setup_context=_multilevel_setup)
