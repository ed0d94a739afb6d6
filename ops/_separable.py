"""The separable PyTorch path, for few channels and large sampling grids, and the cost model that
sends each RoI to it or to the gather path (``ops/_cpu.py``).

The gather path's sample table has 4 * PH * PW * gh * gw entries per RoI, which for few channels
and large adaptive grids (gt masks pooled onto boxes as mask targets: 1 channel, hundreds of
points per bin) costs far more to build than the gather it serves. The bilinear weights are a row
weight times a column weight, so a bin is a weighted sum of map rows (a gather of whole rows, W *
C values each) followed by a weighted sum of columns (a gather over the transposed result): 2 *
(PH * gh + PW * gw) entries per RoI. ``path_costs`` estimates both per RoI; ``split_paths`` sends
each RoI the cheaper way (docs/decisions/0002-roi-align-kernels.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ops._sampling import LevelGeometry, SampleTable, Sampling, gather_bins, ragged_axis_taps, scatter_bins

# Elements of the separable path's intermediate per chunk of RoIs. At 4 MB (float32) it and its
# transpose are reused from the heap and stay in cache between the two passes; 16 MB chunks are
# fresh allocations that page-fault on every call (8k faults, 2.5x the time on the mask-target
# workload of bench/roi_align.py); much smaller ones pay Python overhead per chunk.
_SEPARABLE_CHUNK = 1 << 20

# Which path pools each RoI: None picks the cheaper by ``path_costs``; "gather" or "separable"
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


def path_costs(
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


def split_paths(
    s: Sampling,
    geom: LevelGeometry,
    pooled: tuple[int, int],
    channels: int,
    levels: Tensor | None,
    fixed_grid: bool,
) -> tuple[Tensor | None, list[tuple[int, Tensor]]]:
    """Which RoIs take which path: the RoIs for the gather path (None: all of them), and per level
    the RoIs for the separable path."""
    if PATH is None:
        gather_cost, separable_cost = path_costs(s, geom, pooled, channels, fixed_grid)
        separable = separable_cost < gather_cost
    else:
        separable = torch.full_like(s.grid_h, PATH == "separable", dtype=torch.bool)
    if not bool(separable.any()):
        return None, []
    level = torch.zeros_like(s.grid_h) if levels is None else levels.clamp(min=0)
    by_level = [
        (int(lv), torch.nonzero(separable & (level == lv)).squeeze(1)) for lv in torch.unique(level[separable]).tolist()
    ]
    return torch.nonzero(~separable).squeeze(1), by_level


def _axis_bags(
    start: Tensor, bin_size: Tensor, grid: Tensor, bins: int, size: Tensor, base: Tensor, gain: Tensor
) -> SampleTable:
    """One bag per RoI and bin along one axis: the two taps of each of the bin's sampling points,
    as rows ``base[k] + pixel`` with weights ``gain[k] * tap weight``; bags RoI-major."""
    roi, first, low, high, w_low, w_high = ragged_axis_taps(start, bin_size, grid, bins, size)
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


def _steps(k: int, pooled: tuple[int, int], width: int, channels: int):
    """Consecutive RoI ranges whose [RoIs * PH, W * C] intermediate fits ``_SEPARABLE_CHUNK``."""
    step = max(1, _SEPARABLE_CHUNK // (pooled[0] * width * channels))
    for a in range(0, k, step):
        yield a, min(k, a + step)


def forward(map_rows: Tensor, s: Sampling, geom: LevelGeometry, pooled: tuple[int, int], batch_index: Tensor) -> Tensor:
    """[K, PH, PW, C] bins of RoIs on one level whose pixel rows are ``map_rows`` [N * H, W * C]."""
    ph, pw = pooled
    k = s.x1.shape[0]
    width = int(geom.width[0])
    c = map_rows.shape[1] // width
    out = map_rows.new_empty(k, ph, pw, c)
    for a, b in _steps(k, pooled, width, c):
        t = separable_tables(a, b, s, geom, pooled, batch_index)
        ys = gather_bins(map_rows, t.rows).view(b - a, ph, width, c)
        cols = ys.transpose(1, 2).reshape((b - a) * width, ph * c)
        out[a:b] = gather_bins(cols, t.cols).view(b - a, pw, ph, c).transpose(1, 2)
    return out


def backward(
    map_rows_grad: Tensor,
    grad_bins: Tensor,
    s: Sampling,
    geom: LevelGeometry,
    pooled: tuple[int, int],
    batch_index: Tensor,
) -> None:
    """The adjoint of ``forward``: adds into ``map_rows_grad`` [N * H, W * C] the gradient from
    ``grad_bins`` [K, PH, PW, C]."""
    ph, pw = pooled
    k = s.x1.shape[0]
    width = int(geom.width[0])
    c = map_rows_grad.shape[1] // width
    for a, b in _steps(k, pooled, width, c):
        t = separable_tables(a, b, s, geom, pooled, batch_index)
        g = grad_bins[a:b].transpose(1, 2).reshape((b - a) * pw, ph * c)
        cols_grad = map_rows_grad.new_zeros((b - a) * width, ph * c)
        scatter_bins(cols_grad, g, t.cols)
        ys_grad = cols_grad.view(b - a, width, ph, c).transpose(1, 2).reshape((b - a) * ph, width * c)
        scatter_bins(map_rows_grad, ys_grad, t.rows)
