"""RoIAlign in plain PyTorch tensor operations: the CPU kernel, and the portable path that serves
every other device (CUDA tensors too, where the NVRTC kernels are not used: ``ops/_selfcheck.py``).

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
``ops/_sampling.py``). RoIs with few channels and large sampling grids take the separable path
instead (``ops/_separable.py``, which also holds the cost model that chooses).

Every tensor is made on the inputs' device. The few numbers that size chunks, row spans and the
choice of path are read back to the host, so on a GPU this path synchronises (the kernels do not).
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import fields

import torch
from torch import Tensor

from ops import _separable
from ops._sampling import (
    LevelGeometry,
    SampleTable,
    Sampling,
    axis_points,
    compute_dtype,
    gather_bins,
    interpolation_taps,
    level_bases,
    level_geometry,
    ragged_axis_taps,
    sampling,
    scatter_bins,
)

# Table entries built per chunk of RoIs (index + weight: 12-16 bytes each); bounds peak memory
# for large or adaptively-sampled boxes.
_ENTRIES_PER_CHUNK = 1 << 22


def pixel_table(features: list[Tensor], dtype: torch.dtype, spans: list[list[tuple[int, int]]] | None = None) -> Tensor:
    """Stack feature maps channels-last into one table.

    Args:
        features: maps of shape (N, C, H_l, W_l), any memory format.
        dtype: the table's dtype.
        spans: per level, per image, the first and last row that will be read; rows outside
            (and images with an empty span) are left unwritten. None: all rows.
    Returns:
        table (P, C), levels from the rows ``level_bases`` gives. On the CPU the table lives in a
        per-thread workspace that the next call on this thread overwrites.
    """
    channels = features[0].shape[1]
    bases, total = level_bases(features)
    if len(features) == 1:
        nhwc = features[0].permute(0, 2, 3, 1)
        if nhwc.is_contiguous() and nhwc.dtype == dtype:
            return nhwc.reshape(total, channels)  # channels-last input: no copy
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
    return table


def row_spans(s: Sampling, geom: LevelGeometry, pooled: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """First and last map row each RoI's table entries can read, [K] int64 each, from its first
    and last sampling row (taps are monotone in the coordinate), widened by one row against
    rounding. RoIs without sampling points get an empty span (first > last)."""
    ph = pooled[0]
    first = axis_points(s.y1, s.bin_h, 0, s.grid_h, torch.zeros_like(s.grid_h))
    last = axis_points(s.y1, s.bin_h, ph - 1, s.grid_h, s.grid_h - 1)
    lo_a, hi_a, _, _ = interpolation_taps(first, geom.height)
    lo_b, hi_b, _, _ = interpolation_taps(last, geom.height)
    top = (geom.height - 1).clamp(min=0)
    lo = (torch.minimum(lo_a, lo_b) - 1).clamp(min=0)
    hi = torch.minimum(torch.maximum(hi_a, hi_b) + 1, top)
    empty = (s.grid_h * s.grid_w) == 0
    return torch.where(empty, top + 1, lo), torch.where(empty, -1, hi)


def _spans_by_map(
    lo: Tensor, hi: Tensor, levels: Tensor | None, batch_index: Tensor, n_levels: int, n_images: int
) -> list[list[tuple[int, int]]]:
    """Per level and image, the union of the RoIs' row spans (first > last when none)."""
    group = batch_index if levels is None else levels.clamp(min=0) * n_images + batch_index
    first = torch.full((n_levels * n_images,), 1 << 40, dtype=torch.int64, device="cpu")
    last = torch.full((n_levels * n_images,), -1, dtype=torch.int64, device="cpu")
    first.scatter_reduce_(0, group.cpu(), lo.cpu(), "amin")
    last.scatter_reduce_(0, group.cpu(), hi.cpu(), "amax")
    pairs = list(zip(first.tolist(), last.tolist()))
    return [pairs[level * n_images : (level + 1) * n_images] for level in range(n_levels)]


_workspaces = threading.local()


def _workspace(numel: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialised buffer, reused by later calls on the same thread (CPU only).

    Fresh allocations this large (tens of MB) come straight from the kernel, and faulting their
    pages in costs as much as the copy into them; reusing one buffer avoids that.
    """
    if device.type != "cpu":
        return torch.empty(numel, dtype=dtype, device=device)
    nbytes = numel * torch.empty((), dtype=dtype, device="cpu").element_size()
    buf = getattr(_workspaces, "buffer", None)
    if buf is None or buf.numel() < nbytes:
        buf = torch.empty(nbytes, dtype=torch.uint8, device="cpu")
        _workspaces.buffer = buf
    return buf[:nbytes].view(dtype)


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


def _fixed_grid_table(a: int, b: int, s: Sampling, g: int, geom: LevelGeometry, pooled) -> SampleTable:
    ph, pw = pooled
    x1, y1, bin_h, bin_w, inv_count = s.x1, s.y1, s.bin_h, s.bin_w, s.inv_count
    dev = x1.device
    kc = b - a
    pts = torch.arange(g, device=dev)
    # sampling rows [Kc, PH, g] and columns [Kc, PW, g]
    ys = axis_points(y1[a:b, None, None], bin_h[a:b, None, None], torch.arange(ph, device=dev)[None, :, None], g, pts)
    xs = axis_points(x1[a:b, None, None], bin_w[a:b, None, None], torch.arange(pw, device=dev)[None, :, None], g, pts)
    ylo, yhi, wylo, wyhi = interpolation_taps(ys, geom.height[a:b, None, None])
    xlo, xhi, wxlo, wxhi = interpolation_taps(xs, geom.width[a:b, None, None])
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


def _adaptive_grid_table(a: int, b: int, s: Sampling, geom: LevelGeometry, pooled, entries: Tensor) -> SampleTable:
    """Variable points per RoI: entries are laid out ragged, RoI by RoI."""
    ph, pw = pooled
    dev = s.x1.device
    kc = b - a
    gh, gw = s.grid_h[a:b], s.grid_w[a:b]
    # Sample rows (PH * gh per RoI) and columns (PW * gw per RoI), each with their two taps.
    roi_of_row, row_start, ylo, yhi, wylo, wyhi = ragged_axis_taps(s.y1[a:b], s.bin_h[a:b], gh, ph, geom.height[a:b])
    wdt = geom.width[a:b][roi_of_row]
    row_off = torch.stack([ylo * wdt, yhi * wdt], -1)  # [rows, 2]
    row_w = torch.stack([wylo, wyhi], -1) * s.inv_count[a:b][roi_of_row, None]
    _, col_start, xlo, xhi, wxlo, wxhi = ragged_axis_taps(s.x1[a:b], s.bin_w[a:b], gw, pw, geom.width[a:b])
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


def _select(record, rois: Tensor):
    """A Sampling or LevelGeometry (dataclasses of [K] tensors) for the given RoIs only."""
    return type(record)(**{f.name: getattr(record, f.name)[rois] for f in fields(record)})


def forward(
    features: list[Tensor],
    rois: Tensor,
    scales: list[float],
    levels: Tensor | None,
    pooled: tuple[int, int],
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """RoIAlign of each RoI on its level.

    Args:
        features: maps (N, C, H_l, W_l), one dtype and device.
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
    bases, _ = level_bases(features)
    batch_index = rois[:, 0].to(torch.int64)
    geom = level_geometry(features, scales, levels, batch_index, dtype)
    s = sampling(rois, geom, pooled, sampling_ratio, aligned, dtype)
    # transpose only the map rows that some RoI reads (a prompt's single box reads a few)
    spans = _spans_by_map(*row_spans(s, geom, pooled), levels, batch_index, len(features), features[0].shape[0])
    table = pixel_table(features, dtype, spans)
    gather, separable = _separable.split_paths(s, geom, pooled, c, levels, sampling_ratio > 0)
    s_g, geom_g = (s, geom) if gather is None else (_select(s, gather), _select(geom, gather))
    for a, b, t in sample_tables(s_g, geom_g, pooled, sampling_ratio):
        bins = gather_bins(table, t).view(b - a, ph, pw, c).permute(0, 3, 1, 2)
        if gather is None:
            out[a:b].copy_(bins)
        else:
            out[gather[a:b]] = bins.to(out.dtype)
    for level, rois_on_level in separable:
        n, _, h, w = features[level].shape
        map_rows = table[bases[level] : bases[level] + n * h * w].view(n * h, w * c)
        bins = _separable.forward(
            map_rows, _select(s, rois_on_level), _select(geom, rois_on_level), pooled, batch_index[rois_on_level]
        )
        out[rois_on_level] = bins.permute(0, 3, 1, 2).to(out.dtype)
    return out


def backward(
    grad: Tensor,
    features: list[Tensor],
    rois: Tensor,
    scales: list[float],
    levels: Tensor | None,
    pooled: tuple[int, int],
    sampling_ratio: int,
    aligned: bool,
) -> list[Tensor]:
    """Gradient of ``forward`` with respect to each feature map.

    Args:
        grad: (K, C, PH, PW) gradient of the output.
        features: the forward's maps (only shapes, dtype and memory format are used: meta
            tensors will do).
    Returns:
        one gradient per map on ``grad``'s device, shaped, typed and laid out (NCHW or
        channels-last) like the map.
    """
    dtype = compute_dtype(features[0].dtype)
    ph, pw = pooled
    k, c = rois.shape[0], features[0].shape[1]
    bases, total = level_bases(features)
    table_grad = _workspace(total * c, dtype, grad.device).view(total, c).zero_()
    if k and c:
        geom = level_geometry(features, scales, levels, rois[:, 0].to(torch.int64), dtype)
        s = sampling(rois, geom, pooled, sampling_ratio, aligned, dtype)
        gather, separable = _separable.split_paths(s, geom, pooled, c, levels, sampling_ratio > 0)
        s_g, geom_g = (s, geom) if gather is None else (_select(s, gather), _select(geom, gather))
        for a, b, t in sample_tables(s_g, geom_g, pooled, sampling_ratio):
            grad_of_rois = grad[a:b] if gather is None else grad[gather[a:b]]
            g = grad_of_rois.permute(0, 2, 3, 1).to(dtype).reshape((b - a) * ph * pw, c)
            scatter_bins(table_grad, g, t)
        for level, rois_on_level in separable:
            n, _, h, w = features[level].shape
            map_rows_grad = table_grad[bases[level] : bases[level] + n * h * w].view(n * h, w * c)
            _separable.backward(
                map_rows_grad,
                grad[rois_on_level].permute(0, 2, 3, 1).to(dtype),
                _select(s, rois_on_level),
                _select(geom, rois_on_level),
                pooled,
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


def _is_channels_last(t: Tensor) -> bool:
    """Channels-last and not also plain contiguous (C == 1 or H == W == 1 are both)."""
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
