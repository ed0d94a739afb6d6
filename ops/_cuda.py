"""CUDA launchers for the kernels in ``ops/roi_align.cu`` (compiled with NVRTC on first use).

Nothing here synchronises with the host: the level of each RoI is computed in the kernel, the
launch configuration depends only on shapes, and launches go to PyTorch's current stream, so the
ops can be captured in a CUDA graph (after one warm-up call has compiled and loaded the module).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from torch import Tensor

from ops import _nvrtc

SOURCE_PATH = Path(__file__).with_name("roi_align.cu")
MAX_LEVELS = 8
_LANES, _WARPS = 32, 8  # block shape, as in roi_align.cu

_SUFFIX = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16", torch.bfloat16: "bf16"}


class _Maps(ctypes.Structure):
    """Mirror of ``struct Maps`` in roi_align.cu (same field order, natural alignment)."""

    _fields_ = [
        ("data", ctypes.c_void_p * MAX_LEVELS),
        ("stride_n", ctypes.c_longlong * MAX_LEVELS),
        ("stride_c", ctypes.c_longlong * MAX_LEVELS),
        ("stride_y", ctypes.c_longlong * MAX_LEVELS),
        ("stride_x", ctypes.c_longlong * MAX_LEVELS),
        ("height", ctypes.c_int * MAX_LEVELS),
        ("width", ctypes.c_int * MAX_LEVELS),
        ("scale", ctypes.c_double * MAX_LEVELS),
        ("levels", ctypes.c_int),
        ("first_level", ctypes.c_int),
        ("last_level", ctypes.c_int),
        ("canonical_level", ctypes.c_int),
        ("canonical_scale", ctypes.c_double),
        ("multilevel", ctypes.c_int),
    ]


_source: str | None = None


def source() -> str:
    global _source
    if _source is None:
        _source = SOURCE_PATH.read_text()
    return _source


_kernels: dict[tuple[int, str], _nvrtc.Kernel] = {}


def _kernel(name: str, device: torch.device) -> _nvrtc.Kernel:
    index = device.index if device.index is not None else torch.cuda.current_device()
    _nvrtc.make_current(index)
    kernel = _kernels.get((index, name))
    if kernel is None:
        module = _nvrtc.load(source(), SOURCE_PATH.name, index, torch.cuda.get_device_capability(index))
        kernel = _kernels.setdefault((index, name), module.function(name))
    return kernel


def compile_ptx(arch: str = "compute_80") -> bytes:
    """PTX of all kernels for ``arch``; needs NVRTC but no GPU (CI compiles the source this way)."""
    return _nvrtc.compile_source(source(), SOURCE_PATH.name, arch)


def _maps(
    maps: list[Tensor],
    scales: list[float],
    levels: tuple[int, int] | None,
    canonical_scale: int,
    canonical_level: int,
) -> _Maps:
    """The kernel's view of (N, C, H, W) maps of any strides."""
    if len(maps) > MAX_LEVELS:
        raise ValueError(f"at most {MAX_LEVELS} feature maps, got {len(maps)}")
    m = _Maps()
    for i, (t, s) in enumerate(zip(maps, scales)):
        m.data[i] = t.data_ptr()
        m.stride_n[i], m.stride_c[i], m.stride_y[i], m.stride_x[i] = t.stride()
        m.height[i], m.width[i] = t.shape[2], t.shape[3]
        m.scale[i] = s
    m.levels = len(maps)
    m.multilevel = int(levels is not None)
    m.first_level, m.last_level = levels if levels is not None else (0, 0)
    m.canonical_level = canonical_level
    m.canonical_scale = float(canonical_scale)
    return m


# NCHW maps in the lane layout: False copies them channels-last first (one transpose per level,
# then every load of the kernel is coalesced); True reads them where they are (no copy; a warp's
# loads then stride across channel planes). bench/roi_align.py measures both. The few-channel
# layout always reads maps where they are: its neighbouring threads take neighbouring bins of one
# channel, which NCHW keeps close together.
READ_NCHW_IN_PLACE = False


def _launch(name: str, device: torch.device, grid: tuple[int, int], args: list) -> None:
    """Launches kernel ``name`` on ``grid`` (x, y) blocks of LANES x WARPS threads."""
    with torch.cuda.device(device):
        kernel = _kernel(name, device)
        kernel((*grid, 1), (_LANES, _WARPS, 1), args, torch.cuda.current_stream(device).cuda_stream)


def _channel_tiles(k: int, channels: int) -> tuple[int, int]:
    """The grid of the channel layout: a block per RoI and LANES channels."""
    return k, (channels + _LANES - 1) // _LANES


def _few_channels(channels: int) -> bool:
    """Whether the forward takes the few-channel layout (a thread per output): below LANES
    channels, where the lane layout would leave lanes idle (roi_align.cu says why)."""
    return channels < _LANES


def forward(
    features: list[Tensor],
    rois: Tensor,
    scales: list[float],
    levels: tuple[int, int] | None,
    canonical_scale: int,
    canonical_level: int,
    pooled: tuple[int, int],
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """RoIAlign over one map (``levels`` None) or FPN maps (``levels`` = first and last FPN level
    number), one launch.

    Args:
        features: (N, C, H_l, W_l) maps, any strides (see ``READ_NCHW_IN_PLACE``).
        rois: (K, 5) ``[batch_index, x1, y1, x2, y2]``.
    Returns:
        (K, C, PH, PW), contiguous, the features' dtype.
    """
    dtype = features[0].dtype
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    ph, pw = pooled
    k, c = rois.shape[0], features[0].shape[1]
    out = torch.empty((k, c, ph, pw), dtype=dtype, device=rois.device)
    if k == 0 or c == 0:
        return out
    few = _few_channels(c)
    if not (few or READ_NCHW_IN_PLACE):
        features = [f.contiguous(memory_format=torch.channels_last) for f in features]
    rois_acc = rois.to(acc).contiguous()
    maps = _maps(features, scales, levels, canonical_scale, canonical_level)
    threads = _LANES * _WARPS
    _launch(
        f"roi_align_forward_few_{_SUFFIX[dtype]}" if few else f"roi_align_forward_{_SUFFIX[dtype]}",
        rois.device,
        (k, (c * ph * pw + threads - 1) // threads) if few else _channel_tiles(k, c),
        [
            maps,
            ctypes.c_void_p(rois_acc.data_ptr()),
            ctypes.c_int(c),
            ctypes.c_int(ph),
            ctypes.c_int(pw),
            ctypes.c_int(sampling_ratio),
            ctypes.c_int(int(aligned)),
            ctypes.c_void_p(out.data_ptr()),
        ],
    )
    return out


def backward(
    grad: Tensor,
    rois: Tensor,
    scales: list[float],
    levels: tuple[int, int] | None,
    canonical_scale: int,
    canonical_level: int,
    batch_size: int,
    channels: int,
    heights: list[int],
    widths: list[int],
    channels_last: list[bool],
    pooled: tuple[int, int],
    sampling_ratio: int,
    aligned: bool,
) -> list[Tensor]:
    """Gradients of ``forward`` for each map, in the map's memory format and ``grad``'s dtype.

    Accumulates with atomics in float32 (float64 for float64) channels-last buffers.
    """
    dtype = grad.dtype
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    ph, pw = pooled
    k = rois.shape[0]
    device = grad.device
    direct = acc == dtype and all(channels_last)
    if direct:
        # the accumulation buffers are the results themselves
        buffers = [
            torch.empty(
                (batch_size, channels, h, w), dtype=dtype, device=device, memory_format=torch.channels_last
            ).zero_()
            for h, w in zip(heights, widths)
        ]
    else:
        sizes = [batch_size * h * w * channels for h, w in zip(heights, widths)]
        flat = torch.zeros(sum(sizes), dtype=acc, device=device)  # one memset for all levels
        buffers = [
            part.view(batch_size, h, w, channels).permute(0, 3, 1, 2)
            for part, h, w in zip(flat.split(sizes), heights, widths)
        ]
    if k and channels:
        maps = _maps(buffers, scales, levels, canonical_scale, canonical_level)
        grad_c = grad.contiguous()
        rois_acc = rois.to(acc).contiguous()
        _launch(
            f"roi_align_backward_{_SUFFIX[dtype]}",
            device,
            _channel_tiles(k, channels),
            [
                maps,
                ctypes.c_void_p(rois_acc.data_ptr()),
                ctypes.c_int(channels),
                ctypes.c_int(ph),
                ctypes.c_int(pw),
                ctypes.c_int(sampling_ratio),
                ctypes.c_int(int(aligned)),
                ctypes.c_void_p(grad_c.data_ptr()),
            ],
        )
    if direct:
        return buffers
    return [
        torch.empty_like(b, dtype=dtype, memory_format=torch.channels_last if cl else torch.contiguous_format).copy_(b)
        for b, cl in zip(buffers, channels_last)
    ]
