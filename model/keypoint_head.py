"""The keypoint head of Keypoint R-CNN: an FCN on RoIAlign features that predicts one heatmap
per keypoint, a softmax over its locations (the paper's one-hot m x m mask per keypoint).

The head and predictor are small modules; decoding heatmaps to keypoints (inference) and the
heatmap targets and loss (training) are plain functions beside them, as for the box and mask
heads in ``model.roi_heads``, which runs them. Parameter names follow torchvision's
``roi_heads.keypoint_head`` / ``keypoint_predictor``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KeypointHead(nn.Sequential):
    """FCN: 8 x (3x3 conv 512 + ReLU) on (R, C, 14, 14) RoI features."""

    def __init__(self, in_channels: int, layers: tuple[int, ...] = (512,) * 8) -> None:
        blocks: list[nn.Module] = []
        channels = in_channels
        for out_channels in layers:
            blocks += [nn.Conv2d(channels, out_channels, 3, padding=1), nn.ReLU(inplace=True)]
            channels = out_channels
        super().__init__(*blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)


class KeypointPredictor(nn.Module):
    """4x4 stride-2 deconv to one heatmap per keypoint, then 2x bilinear upsampling:
    (R, 512, 14, 14) -> (R, K, 56, 56) logits."""

    def __init__(self, in_channels: int, num_keypoints: int) -> None:
        super().__init__()
        self.kps_score_lowres = nn.ConvTranspose2d(in_channels, num_keypoints, 4, stride=2, padding=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.kps_score_lowres.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.kps_score_lowres.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.kps_score_lowres(x)
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False, recompute_scale_factor=False)


def _bicubic_matrix(out_sizes: Tensor, out_max: int, in_size: int, dtype: torch.dtype) -> Tensor:
    """Rows of PyTorch's bicubic resampling (align_corners=False, A = -0.75, edge-clamped taps).

    Args:
        out_sizes: (R,) output length of each RoI (integers as floats).
    Returns:
        (R, out_max, in_size) weights; rows at or past a RoI's ``out_size`` are zero.
    """
    a = -0.75
    scale = in_size / out_sizes.to(dtype)  # (R,)
    dst = torch.arange(out_max, device=out_sizes.device, dtype=dtype)
    src = scale[:, None] * (dst + 0.5) - 0.5  # (R, out_max)
    first = src.floor()
    t = src - first

    def near(x: Tensor) -> Tensor:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: Tensor) -> Tensor:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    taps = torch.stack((far(t + 1), near(t), near(1 - t), far(2 - t)), dim=-1)  # (R, out_max, 4)
    index = (first.long()[..., None] + torch.arange(-1, 3, device=out_sizes.device)).clamp(0, in_size - 1)
    taps = taps * (dst[None, :] < out_sizes[:, None]).to(dtype)[..., None]
    weights = torch.zeros(*src.shape, in_size, dtype=dtype, device=out_sizes.device)
    return weights.scatter_add_(2, index, taps)


def heatmaps_to_keypoints(maps: Tensor, rois: Tensor, max_elements: int = 1 << 25) -> tuple[Tensor, Tensor]:
    """Keypoint locations: the argmax of each heatmap after bicubic resizing to its RoI's size in
    pixels (ceil of width and height), as torchvision and Detectron do.

    The resizing is two small matrix products per chunk of RoIs instead of one interpolation
    call per RoI; chunks keep (RoIs x K x height x width) under ``max_elements``.

    Args:
        maps: (R, K, S, S) heatmap logits.
        rois: (R, 4) boxes in input pixels.
    Returns:
        keypoints (R, K, 3) ``(x, y, 1)`` in input pixels, and scores (R, K): the resized logit at
        the argmax.
    """
    num_rois, num_keypoints, size, _ = maps.shape
    dtype = maps.dtype if maps.dtype == torch.float64 else torch.float32
    maps = maps.to(dtype)
    rois = rois.to(dtype)
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    widths_ceil, heights_ceil = widths.ceil(), heights.ceil()

    keypoints = maps.new_zeros(num_rois, num_keypoints, 3)
    scores = maps.new_zeros(num_rois, num_keypoints)
    sizes = torch.stack((heights_ceil, widths_ceil), dim=1).long().tolist()  # the one host sync
    start = 0
    while start < num_rois:
        end, out_h, out_w = start, 0, 0
        while end < num_rois:
            h, w = max(out_h, sizes[end][0]), max(out_w, sizes[end][1])
            if end > start and (end - start + 1) * num_keypoints * h * w > max_elements:
                break
            end, out_h, out_w = end + 1, h, w
        chunk = slice(start, end)
        wy = _bicubic_matrix(heights_ceil[chunk], out_h, size, dtype)  # (r, out_h, S)
        wx = _bicubic_matrix(widths_ceil[chunk], out_w, size, dtype)  # (r, out_w, S)
        with torch.autocast(maps.device.type, enabled=False):  # float32 even under mixed precision
            resized = wy[:, None] @ maps[chunk] @ wx[:, None].transpose(-1, -2)  # (r, K, out_h, out_w)
        if any(sizes[i] != [out_h, out_w] for i in range(start, end)):  # padding: no argmax there
            inside = (torch.arange(out_h, device=maps.device)[None, :, None] < heights_ceil[chunk, None, None]) & (
                torch.arange(out_w, device=maps.device)[None, None, :] < widths_ceil[chunk, None, None]
            )
            resized = resized.masked_fill_(~inside[:, None], float("-inf"))
        resized = resized.flatten(2)
        best, position = resized.max(dim=2)
        x = (position % out_w).to(dtype)
        y = torch.div(position, out_w, rounding_mode="floor").to(dtype)
        keypoints[chunk, :, 0] = (x + 0.5) * (widths[chunk] / widths_ceil[chunk])[:, None] + rois[chunk, 0, None]
        keypoints[chunk, :, 1] = (y + 0.5) * (heights[chunk] / heights_ceil[chunk])[:, None] + rois[chunk, 1, None]
        keypoints[chunk, :, 2] = 1
        scores[chunk] = best
        start = end
    return keypoints, scores


def keypoint_rcnn_inference(keypoint_logits: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """(R, K, 56, 56) heatmap logits and (R, 4) boxes -> keypoints (R, K, 3), scores (R, K)."""
    return heatmaps_to_keypoints(keypoint_logits, boxes)


def keypoints_to_heatmap(keypoints: Tensor, rois: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """The one-hot heatmap target of each keypoint: the cell of the ``size`` x ``size`` grid over
    its RoI that the keypoint falls in (the inverse of ``heatmaps_to_keypoints``, which returns
    cell centres).

    Args:
        keypoints: (R, K, 3) ``(x, y, v)`` in continuous input coordinates, v > 0 labelled.
        rois: (R, 4) boxes in the same coordinates.
    Returns:
        (R, K) int64 flat cell index ``y * size + x``, and (R, K) bool: labelled and inside the RoI.
    """
    x1, y1, x2, y2 = (rois[:, i, None] for i in range(4))
    x = ((keypoints[..., 0] - x1) * (size / (x2 - x1).clamp(min=1e-6))).floor().long()
    y = ((keypoints[..., 1] - y1) * (size / (y2 - y1).clamp(min=1e-6))).floor().long()
    # a keypoint exactly on the right or bottom edge belongs to the last cell
    x = torch.where(keypoints[..., 0] == x2, size - 1, x)
    y = torch.where(keypoints[..., 1] == y2, size - 1, y)
    valid = (keypoints[..., 2] > 0) & (x >= 0) & (y >= 0) & (x < size) & (y < size)
    return (y * size + x) * valid, valid


def keypoint_rcnn_loss(keypoint_logits: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
    """Cross-entropy of each labelled keypoint over the spatial softmax of its heatmap.

    Args:
        keypoint_logits: (R, K, S, S) heatmap logits.
        targets: (R, K) flat index of the target cell.
        valid: (R, K) bool: the keypoints that count.
    Returns:
        Scalar, mean over valid keypoints (0, still attached to the graph, when there are none).
    """
    num_rois, num_keypoints, height, width = keypoint_logits.shape
    if not bool(valid.any()):
        return keypoint_logits.sum() * 0
    logits = keypoint_logits.float().reshape(num_rois * num_keypoints, height * width)
    valid = valid.reshape(-1)
    return F.cross_entropy(logits[valid], targets.reshape(-1)[valid])
