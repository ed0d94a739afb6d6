"""RoIAlign in plain PyTorch tensor operations: the CPU kernel, and the path for every other device.

RoIAlign is linear in the feature map: each output bin is a weighted sum of feature pixels, with
the same weights for every channel. So the work splits in two:

1. A *sample table*, computed once per RoI and shared by all channels: for each output bin, the
   flat pixel indices of the four bilinear corners of each of its sampling points, and their
   weights (bilinear weight / number of points; 0 for points off the map).
2. A gather-reduce over a channels-last table of pixels, ``[pixels, C]``, where each pixel's
   channels are one contiguous row: ``out[bin] = sum_j weight[j] * table[index[j]]``. On the CPU
   this is ``embedding_bag`` (one fused, vectorised pass, no intermediate); elsewhere (e.g. Apple
   MPS) ``index_select`` + ``index_add_``. The backward is the transposed scatter-add.

All FPN levels live in one table, one level after another, so the multi-level op is a single
gather over all RoIs. The coordinate rules follow ``torchvision.ops.roi_align`` exactly (see
``_interpolation_taps``).

The sample table has 4 * PH * PW * gh * gw entries per RoI, which for few channels and large
adaptive grids (gt masks pooled onto boxes as mask targets: 1 channel, hundreds of points per
bin) costs far more to build than the gather it serves. Such RoIs take a *separable* path
instead: the bilinear weights are a row weight times a column weight, so a bin is a weighted
sum of map rows (a gather of whole rows, W * C values each) followed by a weighted sum of
columns (a gather over the transposed result): 2 * (PH * gh + PW * gw) entries per RoI. A cost
model (``_path_costs``) sends each RoI the cheaper way.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

# Table entries built per chunk of RoIs (index + weight: 12-16 bytes each); bounds peak memory
# for large or adaptively-sampled boxes.
_ENTRIES_PER_CHUNK = 1 << 22

# Elements of the separable path's intermediate per chunk of RoIs. At 4 MB (float32) it and its
# transpose are reused from the heap and stay in cache between the two passes; 16 MB chunks are
# fresh allocations that page-fault on every call (8k faults, 2.5x the time on the mask-target
# workload of bench/roi_align.py); much smaller ones pay Python overhead per chunk.
_SEPARABLE_CHUNK = 1 << 20


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else is computed and accumulated in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


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


def pixel_table(
    features: list[Tensor], dtype: torch.dtype, spans: list[list[tuple[int, int]]] | None = None
) -> tuple[Tensor, list[int]]:
    """Stack feature maps channels-last into one table.

    Args:
        features: maps of shape (N, C, H_l, W_l), any memory format.
        dtype: the table's dtype.
        spans: per level, per image, the first and last row that will be read; rows outside
            (and images with an empty span) are left unwritten. None: all rows.
    Returns:
        table (P, C) with P = sum_l N*H_l*W_l, and the first row of each level. On the CPU the
        table lives in a per-thread workspace that the next call on this thread overwrites.
    """
    channels = features[0].shape[1]
    bases, total = [], 0
    for f in features:
        bases.append(total)
        total += f.shape[0] * f.shape[2] * f.shape[3]
    if len(features) == 1:
        nhwc = features[0].permute(0, 2, 3, 1)
        if nhwc.is_contiguous() and nhwc.dtype == dtype:
            return nhwc.reshape(total, channels), bases  # channels-last input: no copy
    table = _workspace(total * channels, dtype, features[0].device).view(total, channels)
    for level, (f, start) in enumerate(zip(features, bases)):
        n, c, h, w = f.shape
        for i in range(n):
            first, last = spans[level][i] if spans is not None else (0, h - 1)
            if first > last:
                continue
            image = table[start + i * h * w : start + (i + 1) * h * w]
            if 2 * (last - first + 1) > h and f.dtype == dtype and f[i].is_contiguous():
                # a plain 2-D transpose takes PyTorch's cache-blocked copy: ~3x a strided one
                image.copy_(f[i].view(c, h * w).t())
            else:
                rows = image[first * w : (last + 1) * w].view(last - first + 1, w, c)
                rows.copy_(f[i, :, first : last + 1].permute(1, 2, 0))
    return table, bases


def _spans_by_map(
    lo: Tensor, hi: Tensor, levels: Tensor | None, batch_index: Tensor, n_levels: int, n_images: int
) -> list[list[tuple[int, int]]]:
    """Per level and image, the union of the RoIs' row spans (first > last when none)."""
    group = batch_index if levels is None else levels.clamp(min=0) * n_images + batch_index
    first = torch.full((n_levels * n_images,), 1 << 40, dtype=torch.int64)
    last = torch.full((n_levels * n_images,), -1, dtype=torch.int64)
    first.scatter_reduce_(0, group.cpu(), lo.cpu(), "amin")
    last.scatter_reduce_(0, group.cpu(), hi.cpu(), "amax")
    pairs = list(zip(first.tolist(), last.tolist()))
    return [pairs[l * n_images : (l + 1) * n_images] for l in range(n_levels)]


_workspaces = threading.local()


def _workspace(numel: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialised buffer, reused by later calls on the same thread (CPU only).

    Fresh allocations this large (tens of MB) come straight from the kernel, and faulting their
    pages in costs as much as the copy into them; reusing one buffer avoids that.
    """
    if device.type != "cpu":
        return torch.empty(numel, dtype=dtype, device=device)
    nbytes = numel * torch.empty((), dtype=dtype).element_size()
    buf = getattr(_workspaces, "buffer", None)
    if buf is None or buf.numel() < nbytes:
        buf = torch.empty(nbytes, dtype=torch.uint8)
        _workspaces.buffer = buf
    return buf[:nbytes].view(dtype)


def release_workspace() -> None:
    """Free this thread's CPU workspace (it is re-created on the next call)."""
    _workspaces.buffer = None


def level_geometry(
    features: list[Tensor], bases: list[int], scales: list[float], levels: Tensor | None,
    batch_index: Tensor, dtype: torch.dtype,
) -> LevelGeometry:
    """Per-RoI level geometry; ``levels`` [K] int64 picks the level of each RoI (None: level 0,
    -1: none)."""
    device = batch_index.device
    hs = torch.tensor([f.shape[2] for f in features], dtype=torch.int64, device=device)
    ws = torch.tensor([f.shape[3] for f in features], dtype=torch.int64, device=device)
    bs = torch.tensor(bases, dtype=torch.int64, device=device)
    # torchvision converts the Python float scale to the kernel's scalar type
    ss = torch.tensor(scales, dtype=torch.float64, device=device).to(dtype)
    if levels is None:
        levels = torch.zeros_like(batch_index)
    gain = (levels >= 0).to(dtype)
    levels = levels.clamp(min=0)
    h, w = hs[levels], ws[levels]
    return LevelGeometry(
        base=bs[levels] + batch_index * h * w, height=h, width=w, scale=ss[levels], gain=gain
    )


def _interpolation_taps(coord: Tensor, size: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
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
class SampleTable:
    """The linear map from the pixel table to the output bins of a chunk of RoIs.

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
    rois: Tensor, geom: LevelGeometry, pooled: tuple[int, int], sampling_ratio: int, aligned: bool,
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


def row_spans(s: Sampling, geom: LevelGeometry, pooled: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """First and last map row each RoI's table entries can read, [K] int64 each, from its first
    and last sampling row (taps are monotone in the coordinate), widened by one row against
    rounding. RoIs without sampling points get an empty span (first > last)."""
    ph = pooled[0]
    first = _axis_points(s.y1, s.bin_h, 0, s.grid_h, torch.zeros_like(s.grid_h))
    last = _axis_points(s.y1, s.bin_h, ph - 1, s.grid_h, s.grid_h - 1)
    lo_a, hi_a, _, _ = _interpolation_taps(first, geom.height)
    lo_b, hi_b, _, _ = _interpolation_taps(last, geom.height)
    top = (geom.height - 1).clamp(min=0)
    lo = (torch.minimum(lo_a, lo_b) - 1).clamp(min=0)
    hi = torch.minimum(torch.maximum(hi_a, hi_b) + 1, top)
    empty = (s.grid_h * s.grid_w) == 0
    return torch.where(empty, top + 1, lo), torch.where(empty, -1, hi)


def sample_tables(s: Sampling, geom: LevelGeometry, pooled: tuple[int, int], sampling_ratio: int):
    """Yield ``(first_roi, last_roi, SampleTable)`` for consecutive chunks of RoIs."""
    ph, pw = pooled
    k = s.x1.shape[0]
    if k == 0:
        return
    if sampling_ratio > 0:
        per_roi = ph * pw * 4 * sampling_ratio * sampling_ratio
        step = max(1, _ENTRIES_PER_CHUNK // per_roi)
        for a in range(0, k, step):
            b = min(k, a + step)
            yield a, b, _fixed_grid_table(a, b, s, sampling_ratio, geom, pooled)
        return
    entries = ph * pw * 4 * s.grid_h * s.grid_w  # [K]
    ends = torch.cumsum(entries, 0).tolist()
    a = 0
    while a < k:
        # as many RoIs as fit in the budget, at least one
        b = max(a + 1, bisect.bisect_right(ends, (ends[a - 1] if a else 0) + _ENTRIES_PER_CHUNK))
        yield a, b, _adaptive_grid_table(a, b, s, geom, pooled, entries)
        a = b


def _axis_points(start: Tensor, bin_size: Tensor, bins: int, grid: Tensor | int, point: Tensor) -> Tensor:
    """Sampling coordinate ``start + bin * bin_size + (point + .5) * bin_size / grid``.

    Operands broadcast; evaluated in torchvision's order so float32 results are bit-identical.
    """
    return start + bins * bin_size + (point.to(start.dtype) + 0.5) * bin_size / grid


def _fixed_grid_table(a: int, b: int, s: Sampling, g: int, geom: LevelGeometry, pooled) -> SampleTable:
    ph, pw = pooled
    x1, y1, bin_h, bin_w, inv_count = s.x1, s.y1, s.bin_h, s.bin_w, s.inv_count
    dev = x1.device
    kc = b - a
    pts = torch.arange(g, device=dev)
    # sampling rows [Kc, PH, g] and columns [Kc, PW, g]
    ys = _axis_points(
        y1[a:b, None, None], bin_h[a:b, None, None], torch.arange(ph, device=dev)[None, :, None], g, pts
    )
    xs = _axis_points(
        x1[a:b, None, None], bin_w[a:b, None, None], torch.arange(pw, device=dev)[None, :, None], g, pts
    )
    ylo, yhi, wylo, wyhi = _interpolation_taps(ys, geom.height[a:b, None, None])
    xlo, xhi, wxlo, wxhi = _interpolation_taps(xs, geom.width[a:b, None, None])
    # taps per bin side, (point, tap) flattened: rows [Kc, PH, 2g], columns [Kc, PW, 2g]
    width = geom.width[a:b, None, None, None]
    row = (geom.base[a:b, None, None, None] + torch.stack([ylo, yhi], -1) * width).view(kc, ph, 2 * g)
    row_w = (torch.stack([wylo, wyhi], -1) * inv_count[a:b, None, None, None]).view(kc, ph, 2 * g)
    col = torch.stack([xlo, xhi], -1).view(kc, pw, 2 * g)
    col_w = torch.stack([wxlo, wxhi], -1).view(kc, pw, 2 * g)
    # each bin's n = (2g)^2 entries, row tap major; the final broadcast has n contiguous in both
    # operands, which keeps it a fast vectorised loop
    n = 4 * g * g
    row_s = row[:, :, :, None].expand(kc, ph, 2 * g, 2 * g).reshape(kc, ph, 1, n)
    row_ws = row_w[:, :, :, None].expand(kc, ph, 2 * g, 2 * g).reshape(kc, ph, 1, n)
    col_s = col[:, :, None, :].expand(kc, pw, 2 * g, 2 * g).reshape(kc, 1, pw, n)
    col_ws = col_w[:, :, None, :].expand(kc, pw, 2 * g, 2 * g).reshape(kc, 1, pw, n)
    index = (row_s + col_s).view(-1)
    weight = (row_ws * col_ws).view(-1)
    offsets = torch.arange(kc * ph * pw, device=dev) * n
    return SampleTable(index, weight, offsets)


def _ragged_axis_taps(
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
        low and high pixel indices and weights [P], as ``_interpolation_taps``.
    """
    n = bins * grid
    roi = torch.repeat_interleave(torch.arange(start.shape[0], device=start.device), n)
    first = torch.cumsum(n, 0) - n
    p = torch.arange(roi.numel(), device=start.device) - first[roi]
    g = grid[roi]
    coord = _axis_points(start[roi], bin_size[roi], p // g, g, p % g)
    return (roi, first) + _interpolation_taps(coord, size[roi])


def _adaptive_grid_table(
    a: int, b: int, s: Sampling, geom: LevelGeometry, pooled, entries: Tensor
) -> SampleTable:
    """Variable points per RoI: entries are laid out ragged, RoI by RoI."""
    ph, pw = pooled
    dev = s.x1.device
    kc = b - a
    gh, gw = s.grid_h[a:b], s.grid_w[a:b]
    # Sample rows (PH * gh per RoI) and columns (PW * gw per RoI), each with their two taps.
    roi_of_row, row_start, ylo, yhi, wylo, wyhi = _ragged_axis_taps(
        s.y1[a:b], s.bin_h[a:b], gh, ph, geom.height[a:b]
    )
    wdt = geom.width[a:b][roi_of_row]
    row_off = torch.stack([ylo * wdt, yhi * wdt], -1)  # [rows, 2]
    row_w = torch.stack([wylo, wyhi], -1) * s.inv_count[a:b][roi_of_row, None]
    _, col_start, xlo, xhi, wxlo, wxhi = _ragged_axis_taps(
        s.x1[a:b], s.bin_w[a:b], gw, pw, geom.width[a:b]
    )
    col = torch.stack([xlo, xhi], -1)  # [cols, 2]
    col_w = torch.stack([wxlo, wxhi], -1)

    # Entries: per RoI, per bin (i, j), per point (iy, ix), per tap (ty, tx), laid out as
    # ((i * PW + j) * gh + iy) * 2 + ty) * gw + ix) * 2 + tx.
    n = entries[a:b]
    roi_of_entry = torch.repeat_interleave(torch.arange(kc, device=dev), n)
    e = torch.arange(roi_of_entry.numel(), device=dev) - (torch.cumsum(n, 0) - n)[roi_of_entry]
    gh_e, gw_e = gh[roi_of_entry], gw[roi_of_entry]
    tx = e % 2
    e = e // 2
    ix = e % gw_e
    e = e // gw_e
    ty = e % 2
    e = e // 2
    iy = e % gh_e
    e = e // gh_e
    j = e % pw
    i = e // pw
    row = row_start[roi_of_entry] + i * gh_e + iy
    colx = col_start[roi_of_entry] + j * gw_e + ix
    index = geom.base[a:b][roi_of_entry] + row_off[row, ty] + col[colx, tx]
    weight = row_w[row, ty] * col_w[colx, tx]
    per_bin = 4 * gh * gw  # [Kc]
    bin_start = torch.cumsum(n, 0) - n
    offsets = (bin_start[:, None] + torch.arange(ph * pw, device=dev)[None, :] * per_bin[:, None]).reshape(-1)
    return SampleTable(index, weight, offsets)


def _axis_bags(
    start: Tensor, bin_size: Tensor, grid: Tensor, bins: int, size: Tensor, base: Tensor, gain: Tensor
) -> SampleTable:
    """One bag per RoI and bin along one axis: the two taps of each of the bin's sampling points,
    as rows ``base[k] + pixel`` with weights ``gain[k] * tap weight``; bags RoI-major."""
    roi, first, low, high, w_low, w_high = _ragged_axis_taps(start, bin_size, grid, bins, size)
    index = (base[roi, None] + torch.stack([low, high], -1)).view(-1)
    weight = (torch.stack([w_low, w_high], -1) * gain[roi, None]).view(-1)
    offsets = 2 * (first[:, None] + torch.arange(bins, device=start.device)[None, :] * grid[:, None])
    return SampleTable(index, weight, offsets.view(-1))


@dataclass
class SeparableTables:
    """A chunk of RoIs pooled as two one-axis passes (bilinear weights factor into a row weight
    times a column weight, and a point is dropped when either coordinate is off the map, so each
    factor can be zeroed alone).

    ``rows``: bag (k, i) sums map rows (all W * C values) into ``ys[k, i]``, weighted by the row
    taps of bin row i's points, 1/count folded in. ``cols``: bag (k, j) sums rows ``k * W + x`` of
    ``ys`` transposed to [Kc * W, PH * C], weighted by the column taps of bin column j's points.
    """

    rows: SampleTable
    cols: SampleTable


def separable_tables(
    a: int, b: int, s: Sampling, geom: LevelGeometry, pooled: tuple[int, int], batch_index: Tensor
) -> SeparableTables:
    """Tables for RoIs a..b, all on one level; rows are indexed ``batch * H + y`` of that level."""
    ph, pw = pooled
    h, w = geom.height[a:b], geom.width[a:b]
    first_row, gain = batch_index[a:b] * h, s.inv_count[a:b]
    rows = _axis_bags(s.y1[a:b], s.bin_h[a:b], s.grid_h[a:b], ph, h, first_row, gain)
    first_col = torch.arange(b - a, device=w.device) * w
    cols = _axis_bags(s.x1[a:b], s.bin_w[a:b], s.grid_w[a:b], pw, w, first_col, torch.ones_like(gain))
    return SeparableTables(rows, cols)


def _separable_steps(k: int, pooled: tuple[int, int], width: int, channels: int):
    """Consecutive RoI ranges whose [RoIs * PH, W * C] intermediate fits ``_SEPARABLE_CHUNK``."""
    step = max(1, _SEPARABLE_CHUNK // (pooled[0] * width * channels))
    for a in range(0, k, step):
        yield a, min(k, a + step)


def _separable_forward(
    map_rows: Tensor, s: Sampling, geom: LevelGeometry, pooled: tuple[int, int], batch_index: Tensor
) -> Tensor:
    """[K, PH, PW, C] bins of RoIs on one level whose pixel rows are ``map_rows`` [N * H, W * C]."""
    ph, pw = pooled
    k = s.x1.shape[0]
    width = int(geom.width[0])
    c = map_rows.shape[1] // width
    out = map_rows.new_empty(k, ph, pw, c)
    for a, b in _separable_steps(k, pooled, width, c):
        t = separable_tables(a, b, s, geom, pooled, batch_index)
        ys = _gather_bins(map_rows, t.rows).view(b - a, ph, width, c)
        cols = ys.transpose(1, 2).reshape((b - a) * width, ph * c)
        out[a:b] = _gather_bins(cols, t.cols).view(b - a, pw, ph, c).transpose(1, 2)
    return out


def _separable_backward(
    map_rows_grad: Tensor, grad_bins: Tensor, s: Sampling, geom: LevelGeometry, pooled: tuple[int, int],
    batch_index: Tensor,
) -> None:
    """The adjoint of ``_separable_forward``: adds into ``map_rows_grad`` [N * H, W * C] the
    gradient from ``grad_bins`` [K, PH, PW, C]."""
    ph, pw = pooled
    k = s.x1.shape[0]
    width = int(geom.width[0])
    c = map_rows_grad.shape[1] // width
    for a, b in _separable_steps(k, pooled, width, c):
        t = separable_tables(a, b, s, geom, pooled, batch_index)
        g = grad_bins[a:b].transpose(1, 2).reshape((b - a) * pw, ph * c)
        cols_grad = map_rows_grad.new_zeros((b - a) * width, ph * c)
        _scatter_bins(cols_grad, g, t.cols)
        ys_grad = cols_grad.view(b - a, width, ph, c).transpose(1, 2).reshape((b - a) * ph, width * c)
        _scatter_bins(map_rows_grad, ys_grad, t.rows)


# Which path pools each RoI: None picks the cheaper by ``_path_costs``; "gather" or "separable"
# forces one for every RoI (tests; bench/roi_align.py --crossover measures both).
PATH: str | None = None

# Costs per RoI of the two paths, in nanoseconds on one core, fitted to timings of both paths
# (bench/roi_align.py --crossover; docs/decisions/0002-roi-align-kernels.md). Only their
# ratios matter. Building a table entry is cheap on a fixed grid (broadcasts) and dear on an
# adaptive one (a ragged layout: integer divisions and gathers per entry).
_NS_PER_ENTRY_FIXED_GRID = 1.5
_NS_PER_ENTRY_ADAPTIVE_GRID = 140.0
_NS_PER_ENTRY_CHANNEL = 0.11  # one channel of one gathered entry
_NS_PER_AXIS_ENTRY = 50.0  # one entry of a separable one-axis table, built and gathered
_NS_PER_ROW_ELEMENT = 0.1  # one multiply-add over a map row (W * C values)
_NS_PER_TRANSPOSED_ELEMENT = 1.0  # the [PH, W * C] -> [W, PH * C] transpose between the passes
_NS_PER_COLUMN_ELEMENT = 0.25  # one multiply-add over a row of the transpose (PH * C values)


def _path_costs(
    s: Sampling, geom: LevelGeometry, pooled: tuple[int, int], channels: int, fixed_grid: bool
) -> tuple[Tensor, Tensor]:
    """[K] estimated time of each RoI on the gather path and on the separable path.

    The gather path's entries grow with the points per bin (gh * gw), the separable path's with
    their sides (gh + gw) but its rows pass reads whole map rows (W * C values) per point row.
    """
    ph, pw = pooled
    gh, gw = s.grid_h.to(torch.float64), s.grid_w.to(torch.float64)
    width = geom.width.to(torch.float64)
    entry = _NS_PER_ENTRY_FIXED_GRID if fixed_grid else _NS_PER_ENTRY_ADAPTIVE_GRID
    gather = 4 * ph * pw * gh * gw * (entry + _NS_PER_ENTRY_CHANNEL * channels)
    separable = 2 * (ph * gh + pw * gw) * _NS_PER_AXIS_ENTRY + channels * (
        2 * ph * gh * width * _NS_PER_ROW_ELEMENT
        + ph * width * _NS_PER_TRANSPOSED_ELEMENT
        + 2 * pw * gw * ph * _NS_PER_COLUMN_ELEMENT
    )
    return gather, separable


def _split_paths(
    s: Sampling, geom: LevelGeometry, pooled: tuple[int, int], channels: int, levels: Tensor | None,
    fixed_grid: bool,
) -> tuple[Tensor | None, list[tuple[int, Tensor]]]:
    """Which RoIs take which path: the RoIs for the gather path (None: all of them), and per level
    the RoIs for the separable path."""
    if PATH is None:
        gather_cost, separable_cost = _path_costs(s, geom, pooled, channels, fixed_grid)
        separable = separable_cost < gather_cost
    else:
        separable = torch.full_like(s.grid_h, PATH == "separable", dtype=torch.bool)
    if not bool(separable.any()):
        return None, []
    level = torch.zeros_like(s.grid_h) if levels is None else levels.clamp(min=0)
    by_level = [
        (int(lv), torch.nonzero(separable & (level == lv)).squeeze(1))
        for lv in torch.unique(level[separable]).tolist()
    ]
    return torch.nonzero(~separable).squeeze(1), by_level


def _select(record, rois: Tensor):
    """A Sampling or LevelGeometry (dataclasses of [K] tensors) for the given RoIs only."""
    return type(record)(**{f.name: getattr(record, f.name)[rois] for f in fields(record)})


def _fused_gather(device: torch.device) -> bool:
    """Whether ``embedding_bag`` (fused gather-reduce) serves this device; elsewhere, e.g. on
    Apple MPS, index_select + index_add_ do."""
    return device.type == "cpu"


def _gather_bins(table: Tensor, s: SampleTable) -> Tensor:
    """[B, C]: each bin's weighted sum of table rows."""
    if _fused_gather(table.device):
        # embedding_bag fuses gather, weighting and reduction: rows of C contiguous values.
        return F.embedding_bag(s.index, table, s.offsets, mode="sum", per_sample_weights=s.weight)
    out = table.new_zeros(s.offsets.numel(), table.shape[1])
    return out.index_add_(0, s.bin_of_entry(), table.index_select(0, s.index) * s.weight[:, None])


def forward(
    features: list[Tensor], rois: Tensor, scales: list[float], levels: Tensor | None,
    pooled: tuple[int, int], sampling_ratio: int, aligned: bool,
) -> Tensor:
    """RoIAlign of each RoI on its level.

    Args:
        features: maps (N, C, H_l, W_l), one dtype.
        rois: (K, 5) ``[batch_index, x1, y1, x2, y2]`` in image coordinates.
        scales: map scale of each level (map pixels per image pixel).
        levels: (K,) int64 level of each RoI, or None for a single level.
    Returns:
        (K, C, PH, PW) in the features' dtype, contiguous.
    """
    dtype = compute_dtype(features[0].dtype)
    ph, pw = pooled
    k, c = rois.shape[0], features[0].shape[1]
    out = torch.empty(k, c, ph, pw, dtype=features[0].dtype, device=features[0].device)
    if k == 0 or c == 0:
        return out.zero_()
    shapes = [torch.empty(f.shape, device="meta") for f in features]
    bases = list(itertools.accumulate([0] + [f.shape[0] * f.shape[2] * f.shape[3] for f in features[:-1]]))
    batch_index = rois[:, 0].to(torch.int64)
    geom = level_geometry(shapes, bases, scales, levels, batch_index, dtype)
    s = sampling(rois, geom, pooled, sampling_ratio, aligned, dtype)
    # transpose only the map rows that some RoI reads (a prompt's single box reads a few)
    spans = _spans_by_map(*row_spans(s, geom, pooled), levels, batch_index, len(features), features[0].shape[0])
    table, _ = pixel_table(features, dtype, spans)
    gather, separable = _split_paths(s, geom, pooled, c, levels, sampling_ratio > 0)
    s_g, geom_g = (s, geom) if gather is None else (_select(s, gather), _select(geom, gather))
    for a, b, t in sample_tables(s_g, geom_g, pooled, sampling_ratio):
        bins = _gather_bins(table, t).view(b - a, ph, pw, c).permute(0, 3, 1, 2)
        if gather is None:
            out[a:b].copy_(bins)
        else:
            out[gather[a:b]] = bins.to(out.dtype)
    for level, rois_on_level in separable:
        n, _, h, w = features[level].shape
        map_rows = table[bases[level] : bases[level] + n * h * w].view(n * h, w * c)
        bins = _separable_forward(
            map_rows, _select(s, rois_on_level), _select(geom, rois_on_level), pooled,
            batch_index[rois_on_level],
        )
        out[rois_on_level] = bins.permute(0, 3, 1, 2).to(out.dtype)
    return out


def backward(
    grad: Tensor, features: list[Tensor], rois: Tensor, scales: list[float], levels: Tensor | None,
    pooled: tuple[int, int], sampling_ratio: int, aligned: bool,
) -> list[Tensor]:
    """Gradient of ``forward`` with respect to each feature map.

    Args:
        grad: (K, C, PH, PW) gradient of the output.
        features: the forward's maps (only shapes, dtype, device and memory format are used).
    Returns:
        one gradient per map, shaped, typed and laid out (NCHW or channels-last) like the map.
    """
    dtype = compute_dtype(features[0].dtype)
    ph, pw = pooled
    k, c = rois.shape[0], features[0].shape[1]
    bases, total = [], 0
    for f in features:
        bases.append(total)
        total += f.shape[0] * f.shape[2] * f.shape[3]
    table_grad = _workspace(total * c, dtype, grad.device).view(total, c).zero_()
    if k and c:
        geom = level_geometry(features, bases, scales, levels, rois[:, 0].to(torch.int64), dtype)
        s = sampling(rois, geom, pooled, sampling_ratio, aligned, dtype)
        gather, separable = _split_paths(s, geom, pooled, c, levels, sampling_ratio > 0)
        s_g, geom_g = (s, geom) if gather is None else (_select(s, gather), _select(geom, gather))
        for a, b, t in sample_tables(s_g, geom_g, pooled, sampling_ratio):
            grad_of_rois = grad[a:b] if gather is None else grad[gather[a:b]]
            g = grad_of_rois.permute(0, 2, 3, 1).to(dtype).reshape((b - a) * ph * pw, c)
            _scatter_bins(table_grad, g, t)
        for level, rois_on_level in separable:
            n, _, h, w = features[level].shape
            map_rows_grad = table_grad[bases[level] : bases[level] + n * h * w].view(n * h, w * c)
            _separable_backward(
                map_rows_grad, grad[rois_on_level].permute(0, 2, 3, 1).to(dtype),
                _select(s, rois_on_level), _select(geom, rois_on_level), pooled,
                rois[rois_on_level, 0].to(torch.int64),
            )
    grads = []
    for f, start in zip(features, bases):
        n, _, h, w = f.shape
        out = torch.empty((n, c, h, w), dtype=f.dtype, device=grad.device)
        if _is_channels_last(f):
            out = out.contiguous(memory_format=torch.channels_last)
        for i in range(n):
            rows = table_grad[start + i * h * w : start + (i + 1) * h * w]
            if out.dtype == dtype and out[i].is_contiguous():
                out[i].view(c, h * w).copy_(rows.t())  # PyTorch's cache-blocked 2-D transpose
            else:
                out[i].copy_(rows.view(h, w, c).permute(2, 0, 1))
        grads.append(out)
    return grads


# Entries scattered per step of the unfused backward: bounds its (entries, C) temporary.
_SCATTER_STEP = 16384


def _scatter_bins(table_grad: Tensor, grad_bins: Tensor, s: SampleTable) -> None:
    """table_grad[index[j]] += weight[j] * grad_bins[bin(j)]: the adjoint of ``_gather_bins``."""
    bin_of = s.bin_of_entry()
    if _fused_gather(table_grad.device):
        # The adjoint as a gather too: entries sorted by pixel form one bag per pixel, reduced by
        # embedding_bag without a temporary, then added once per distinct pixel.
        pixel, order = torch.sort(s.index)
        pixels, counts = torch.unique_consecutive(pixel, return_counts=True)
        sums = F.embedding_bag(
            bin_of[order], grad_bins, torch.cumsum(counts, 0) - counts, mode="sum",
            per_sample_weights=s.weight[order],
        )
        table_grad.index_add_(0, pixels, sums)
        return
    for a in range(0, s.index.numel(), _SCATTER_STEP):
        part = slice(a, a + _SCATTER_STEP)
        contrib = grad_bins.index_select(0, bin_of[part]).mul_(s.weight[part, None])
        table_grad.index_add_(0, s.index[part], contrib)


def _is_channels_last(t: Tensor) -> bool:
    """Channels-last and not also plain contiguous (C == 1 or H == W == 1 are both)."""
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
