"""Where RoIAlign samples, and sample tables: the pieces both PyTorch paths share.

Each RoI's sampling grid follows ``torchvision.ops.roi_align`` exactly (``sampling``,
``interpolation_taps``). A ``SampleTable`` holds the linear map from a table of pixel rows to
output bins; ``gather_bins`` applies it and ``scatter_bins`` its adjoint. The gather path
(``ops/_cpu.py``) builds one entry per bilinear corner of each sampling point; the separable path
(``ops/_separable.py``) builds one table per axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# Entries scattered per step of the unfused backward: bounds its (entries, C) temporary.
_SCATTER_STEP = 16384


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else is computed and accumulated in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def level_bases(features: list[Tensor]) -> tuple[list[int], int]:
    """The first row of each level in the pixel table (levels one after another, images one
    after another within a level, N * H_l * W_l rows each), and the table's number of rows."""
    bases, total = [], 0
    for f in features:
        bases.append(total)
        total += f.shape[0] * f.shape[2] * f.shape[3]
    return bases, total


@dataclass
class LevelGeometry:
    """Where each RoI samples: per-RoI tensors of shape [K] (chosen level's extent and scale).

    ``base`` is the row of the RoI's image's pixel (0, 0) in the pixel table; ``gain`` is 1, or 0
    for a RoI that no level takes (a degenerate box whose level is NaN), which then pools zeros.
    """

    base: Tensor  # [K] int64
    height: Tensor  # [K] int64
    width: Tensor  # [K] int64
    scale: Tensor  # [K] compute dtype
    gain: Tensor  # [K] compute dtype


def level_geometry(
    features: list[Tensor], scales: list[float], levels: Tensor | None, batch_index: Tensor, dtype: torch.dtype
) -> LevelGeometry:
    """Per-RoI level geometry of maps (N, C, H_l, W_l) (only their shapes are read); ``levels``
    [K] int64 picks the level of each RoI (None: level 0, -1: none)."""
    device = batch_index.device
    hs = torch.tensor([f.shape[2] for f in features], dtype=torch.int64, device=device)
    ws = torch.tensor([f.shape[3] for f in features], dtype=torch.int64, device=device)
    bs = torch.tensor(level_bases(features)[0], dtype=torch.int64, device=device)
    # torchvision converts the Python float scale to the kernel's scalar type
    ss = torch.tensor(scales, dtype=torch.float64, device=device).to(dtype)
    if levels is None:
        levels = torch.zeros_like(batch_index)
    gain = (levels >= 0).to(dtype)
    levels = levels.clamp(min=0)
    h, w = hs[levels], ws[levels]
    return LevelGeometry(base=bs[levels] + batch_index * h * w, height=h, width=w, scale=ss[levels], gain=gain)


def interpolation_taps(coord: Tensor, size: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Linear interpolation along one axis with torchvision's border rules.

    A point outside [-1, size] (or NaN) contributes nothing; otherwise it is clamped to >= 0, and
    a point at or past the last pixel samples the last pixel alone. The taps of points that
    contribute nothing still lie on the map and never decrease with the coordinate (row spans
    rely on that).

    Args:
        coord: sample coordinates in pixels of the map, any shape.
        size: map extent along this axis, broadcastable to ``coord`` (int64).
    Returns:
        (low, high) pixel indices (int64) and their weights, each of ``coord``'s shape.
    """
    extent = size.to(coord.dtype)
    valid = (coord >= -1.0) & (coord <= extent) & (size > 0)
    c = torch.nan_to_num(torch.minimum(coord.clamp(min=0), extent), nan=0.0)
    low = c.to(torch.int64)  # truncation == floor for c >= 0
    last = (size - 1).clamp(min=0)
    at_edge = low >= last
    low = torch.where(at_edge, last, low)
    high = torch.where(at_edge, last, low + 1)
    c = torch.where(at_edge, low.to(c.dtype), c)
    frac = c - low.to(c.dtype)
    zero = torch.zeros((), dtype=c.dtype, device=c.device)
    return low, high, torch.where(valid, 1.0 - frac, zero), torch.where(valid, frac, zero)


@dataclass
class Sampling:
    """Where each RoI's sampling points lie, in its map's pixels: [K] tensors.

    Bin (i, j) has points ``y1 + i * bin_h + (iy + .5) * bin_h / grid_h`` (iy < grid_h), and
    likewise along x; each point's weight is ``inv_count`` times its bilinear weights.
    """

    x1: Tensor
    y1: Tensor
    bin_w: Tensor
    bin_h: Tensor
    grid_w: Tensor  # int64, >= 0
    grid_h: Tensor  # int64, >= 0
    inv_count: Tensor  # 1 / max(grid_h * grid_w, 1), times the level's gain


def sampling(
    rois: Tensor,
    geom: LevelGeometry,
    pooled: tuple[int, int],
    sampling_ratio: int,
    aligned: bool,
    dtype: torch.dtype,
) -> Sampling:
    """The sampling grid of each RoI, as torchvision's roi_align kernels compute it.

    Args:
        rois: (K, 5) rows ``[batch_index, x1, y1, x2, y2]`` in image coordinates.
        geom: per-RoI level geometry.
        pooled: (PH, PW) output bins.
        sampling_ratio: points per bin side; <= 0 means ``ceil(roi_size / pooled_size)`` per RoI.
        dtype: coordinate dtype (float32, or float64 for float64 inputs).
    """
    ph, pw = pooled
    r = rois[:, 1:5].to(dtype)
    offset = 0.5 if aligned else 0.0  # aligned: pixel centres sit at +0.5 (half-pixel offset)
    x1 = r[:, 0] * geom.scale - offset
    y1 = r[:, 1] * geom.scale - offset
    roi_w = r[:, 2] * geom.scale - offset - x1
    roi_h = r[:, 3] * geom.scale - offset - y1
    if not aligned:  # legacy: boxes are at least one pixel
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = torch.full_like(x1, sampling_ratio, dtype=torch.int64)
        grid_w = grid_h
    else:
        # ceil of a negative size (aligned boxes with x2 < x1) is <= 0: no sampling points
        grid_h = torch.nan_to_num(torch.ceil(roi_h / ph), nan=0.0).to(torch.int64).clamp(min=0)
        grid_w = torch.nan_to_num(torch.ceil(roi_w / pw), nan=0.0).to(torch.int64).clamp(min=0)
    inv_count = geom.gain / (grid_h * grid_w).clamp(min=1).to(dtype)
    return Sampling(x1, y1, roi_w / pw, roi_h / ph, grid_w, grid_h, inv_count)


def axis_points(start: Tensor, bin_size: Tensor, bins: int, grid: Tensor | int, point: Tensor) -> Tensor:
    """Sampling coordinate ``start + bin * bin_size + (point + .5) * bin_size / grid``.

    Operands broadcast; evaluated in torchvision's order so float32 results are bit-identical.
    """
    return start + bins * bin_size + (point.to(start.dtype) + 0.5) * bin_size / grid


def ragged_axis_taps(
    start: Tensor, bin_size: Tensor, grid: Tensor, bins: int, size: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The sampling points of RoIs along one axis, ``grid[k]`` per bin, laid out RoI by RoI, then
    bin by bin, with their two interpolation taps.

    Args:
        start, bin_size, grid, size: [Kc] per RoI: first coordinate, bin side, points per bin side
            (int64), map extent (int64).
        bins: bins along this axis.
    Returns:
        roi [P] (the RoI of each point), first [Kc] (each RoI's first point), and the points'
        low and high pixel indices and weights [P], as ``interpolation_taps``.
    """
    n = bins * grid
    roi = torch.repeat_interleave(torch.arange(start.shape[0], device=start.device), n)
    first = torch.cumsum(n, 0) - n
    p = torch.arange(roi.numel(), device=start.device) - first[roi]
    g = grid[roi]
    coord = axis_points(start[roi], bin_size[roi], p // g, g, p % g)
    return (roi, first) + interpolation_taps(coord, size[roi])


@dataclass
class SampleTable:
    """The linear map from a table of pixel rows to the output bins of a chunk of RoIs.

    Bin ``b`` (RoI-major, then output row, then column) is
    ``sum(weight[j] * table[index[j]] for j in range(offsets[b], offsets[b + 1]))``.
    """

    index: Tensor  # [E] int64 rows of the pixel table
    weight: Tensor  # [E] compute dtype: bilinear weight / number of sampling points
    offsets: Tensor  # [B] int64 first entry of each bin

    def bin_of_entry(self) -> Tensor:
        """[E] int64: the bin each entry belongs to."""
        counts = torch.diff(self.offsets, append=self.offsets.new_tensor([self.index.numel()]))
        return torch.repeat_interleave(torch.arange(self.offsets.numel(), device=self.offsets.device), counts)


def fused_gather(device: torch.device) -> bool:
    """Whether ``embedding_bag`` (fused gather-reduce) serves this device; elsewhere, e.g. on
    Apple MPS or CUDA, index_select + index_add_ do."""
    return device.type == "cpu"


def gather_bins(table: Tensor, s: SampleTable) -> Tensor:
    """[B, C]: each bin's weighted sum of rows of ``table`` [rows, C]."""
    if fused_gather(table.device):
        # embedding_bag fuses gather, weighting and reduction: rows of C contiguous values.
        return F.embedding_bag(s.index, table, s.offsets, mode="sum", per_sample_weights=s.weight)
    out = table.new_zeros(s.offsets.numel(), table.shape[1])
    return out.index_add_(0, s.bin_of_entry(), table.index_select(0, s.index) * s.weight[:, None])


def scatter_bins(table_grad: Tensor, grad_bins: Tensor, s: SampleTable) -> None:
    """table_grad[index[j]] += weight[j] * grad_bins[bin(j)]: the adjoint of ``gather_bins``."""
    bin_of = s.bin_of_entry()
    if fused_gather(table_grad.device):
        # The adjoint as a gather too: entries sorted by pixel form one bag per pixel, reduced by
        # embedding_bag without a temporary, then added once per distinct pixel.
        pixel, order = torch.sort(s.index)
        pixels, counts = torch.unique_consecutive(pixel, return_counts=True)
        sums = F.embedding_bag(
            bin_of[order],
            grad_bins,
            torch.cumsum(counts, 0) - counts,
            mode="sum",
            per_sample_weights=s.weight[order],
        )
        table_grad.index_add_(0, pixels, sums)
        return
    for a in range(0, s.index.numel(), _SCATTER_STEP):
        part = slice(a, a + _SCATTER_STEP)
        contrib = grad_bins.index_select(0, bin_of[part]).mul_(s.weight[part, None])
        table_grad.index_add_(0, s.index[part], contrib)
