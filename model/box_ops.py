"""Box arithmetic shared by the RPN and the box head. Boxes are ``(x1, y1, x2, y2)`` in pixels of
the (resized, padded) network input unless a docstring says otherwise."""

from __future__ import annotations

import math

import torch
from torch import Tensor

# exp() of a larger log-scale delta would blow a box up beyond 1000/16 times its anchor
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def decode_boxes(
    deltas: Tensor, boxes: Tensor, weights: tuple[float, float, float, float]
) -> Tensor:
    """Apply regression deltas ``(dx, dy, dw, dh)`` (R-CNN parametrisation) to reference boxes.

    Args:
        deltas: (R, 4 * C) deltas, C boxes per reference box (C = 1 for the RPN, one per class
            for the box head).
        boxes: (R, 4) reference boxes (anchors or proposals).
        weights: divisors of ``(dx, dy, dw, dh)``.
    Returns:
        (R, C, 4) boxes.
    """
    boxes = boxes.to(deltas.dtype)
    widths = (boxes[:, 2] - boxes[:, 0])[:, None]
    heights = (boxes[:, 3] - boxes[:, 1])[:, None]
    ctr_x = boxes[:, 0, None] + 0.5 * widths
    ctr_y = boxes[:, 1, None] + 0.5 * heights

    deltas = deltas.reshape(deltas.shape[0], -1, 4)
    wx, wy, ww, wh = weights
    dx = deltas[..., 0] / wx
    dy = deltas[..., 1] / wy
    dw = (deltas[..., 2] / ww).clamp(max=BBOX_XFORM_CLIP)
    dh = (deltas[..., 3] / wh).clamp(max=BBOX_XFORM_CLIP)

    pred_ctr_x = dx * widths + ctr_x
    pred_ctr_y = dy * heights + ctr_y
    half_w = 0.5 * torch.exp(dw) * widths
    half_h = 0.5 * torch.exp(dh) * heights
    return torch.stack(
        (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h), dim=-1
    )


def clip_boxes(boxes: Tensor, image_sizes: Tensor) -> Tensor:
    """Clip boxes to their image.

    Args:
        boxes: (..., 4) boxes.
        image_sizes: (..., 2) ``(height, width)`` of the image each box belongs to, broadcastable
            against ``boxes[..., 0]``.
    """
    height = image_sizes[..., 0:1].to(boxes.dtype)
    width = image_sizes[..., 1:2].to(boxes.dtype)
    x = boxes[..., 0::2].clamp(min=0).minimum(width)
    y = boxes[..., 1::2].clamp(min=0).minimum(height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def nonempty_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """(..., 4) boxes -> (...) bool, True where both sides are at least ``min_size``."""
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return (widths >= min_size) & (heights >= min_size)


def top_per_image(
    order: Tensor, image_index: Tensor, num_images: int, k: int
) -> tuple[Tensor, list[int]]:
    """Keep the first ``k`` candidates of every image.

    Args:
        order: (M,) candidate indices, best first (e.g. what ``batched_nms`` returns).
        image_index: (C,) image of every candidate, indexed by the values of ``order``.
        num_images: N.
        k: candidates to keep per image.
    Returns:
        The kept indices grouped by image (image 0 first), best first within an image, and the
        number kept for each image (a list: the one host synchronisation).
    """
    image_sorted, perm = torch.sort(image_index[order], stable=True)
    order = order[perm]
    counts = torch.bincount(image_sorted, minlength=num_images)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(order.shape[0], device=order.device) - starts[image_sorted]
    return order[rank < k], counts.clamp(max=k).tolist()
