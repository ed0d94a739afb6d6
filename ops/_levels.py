"""Which FPN level each RoI pools from: FPN's eq. 1 as torchvision's ``LevelMapper`` computes it.

The PyTorch path takes the levels from here; the CUDA kernels compute the same rule per RoI
(``roi_level`` in ``ops/roi_align.cu``) so that they never synchronise with the host.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

# torchvision's LevelMapper adds this before the floor, so boxes exactly on a level boundary land
# on the upper level despite rounding in log2.
_LEVEL_EPS = 1e-6


def level_range(scales: Sequence[float]) -> tuple[int, int]:
    """FPN level numbers (k in scale 2**-k) of the first and last map, as torchvision derives them."""
    k = -torch.log2(torch.tensor([scales[0], scales[-1]], dtype=torch.float32, device="cpu"))
    return int(k[0].item()), int(k[1].item())


def map_levels(rois: Tensor, scales: Sequence[float], canonical_scale: int = 224, canonical_level: int = 4) -> Tensor:
    """(K,) int64 index into ``scales`` of the level each RoI pools from; -1 for a degenerate box
    whose level is NaN (it pools zeros, as in torchvision). On ``rois``' device.

    Computed in float64 for float64 boxes and float32 otherwise (float16 areas overflow).
    """
    k_min, k_max = level_range(scales)
    boxes = rois[:, 1:5].to(torch.float64 if rois.dtype == torch.float64 else torch.float32)
    size = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    # a CPU scalar tensor, as in torchvision: added in the boxes' dtype, on any device
    eps = torch.tensor(_LEVEL_EPS, dtype=size.dtype, device="cpu")
    level = torch.floor(canonical_level + torch.log2(size / canonical_scale) + eps)
    level = torch.clamp(level, min=k_min, max=k_max) - k_min
    return torch.where(torch.isnan(level), -1.0, level).to(torch.int64)
