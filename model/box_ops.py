"""Box arithmetic shared by the RPN and the box head. Boxes are ``(x1, y1, x2, y2)`` in pixels of
the (resized, padded) network input unless a docstring says otherwise."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import batched_nms

# exp() of a larger log-scale delta would blow a box up beyond 1000/16 times its anchor
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def decode_boxes(deltas: Tensor, boxes: Tensor, weights: tuple[float, float, float, float]) -> Tensor:
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
    return torch.stack((pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h), dim=-1)


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


def top_per_image(order: Tensor, image_index: Tensor, num_images: int, k: int) -> tuple[Tensor, list[int]]:
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


# The first try of ``best_after_nms``: this many candidates per detection wanted (grown 4x a try)
FIRST_PREFIX_PER_DETECTION = 10


def best_after_nms(
    boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float, image_index: Tensor, num_images: int, k: int
) -> tuple[Tensor, list[int]]:
    """``top_per_image(batched_nms(...), ...)`` without running NMS on candidates that cannot be
    among the ``k`` best of their image: the box head at a low score threshold gives 1000 RoIs x 90
    classes, and NMS over all of them cost more than the mask head on a 2-core CPU.

    Exact: greedy NMS decides a candidate from the higher-scoring candidates of its group only, so
    on the candidates at or above some score (ties included) it decides them as on all. Once an
    image has ``k`` kept there, none below can be among its best ``k``. The prefix grows until
    every image has ``k`` there or has no candidate left outside it.

    Args:
        boxes: (M, 4); scores: (M,); groups: (M,) NMS runs within a group (image and class).
        image_index: (M,) image of every candidate; num_images: N; k: detections per image.
    Returns:
        As ``top_per_image``: the kept indices grouped by image, best first, and the count per image.
    """
    total = scores.shape[0]
    available = torch.bincount(image_index, minlength=num_images)
    size = FIRST_PREFIX_PER_DETECTION * k * num_images
    while True:
        if size >= total:
            keep = batched_nms(boxes, scores, groups, iou_threshold)
            return top_per_image(keep, image_index, num_images, k)
        lowest = scores.topk(size).values[-1]
        prefix = (scores >= lowest).nonzero().squeeze(1)  # ties at the boundary come in together
        keep = prefix[batched_nms(boxes[prefix], scores[prefix], groups[prefix], iou_threshold)]
        kept = torch.bincount(image_index[keep], minlength=num_images)
        seen = torch.bincount(image_index[prefix], minlength=num_images)
        if bool(((kept >= k) | (seen == available)).all()):  # an image's every candidate seen: done too
            return top_per_image(keep, image_index, num_images, k)
        size *= 4


def encode_boxes(targets: Tensor, references: Tensor, weights: tuple[float, float, float, float]) -> Tensor:
    """The deltas ``(dx, dy, dw, dh)`` that ``decode_boxes`` turns ``references`` into ``targets``.

    Args:
        targets, references: (R, 4) boxes, paired row by row.
        weights: multipliers of ``(dx, dy, dw, dh)`` (the divisors of ``decode_boxes``).
    Returns:
        (R, 4) regression targets.
    """
    widths = references[:, 2] - references[:, 0]
    heights = references[:, 3] - references[:, 1]
    ctr_x = references[:, 0] + 0.5 * widths
    ctr_y = references[:, 1] + 0.5 * heights
    target_widths = targets[:, 2] - targets[:, 0]
    target_heights = targets[:, 3] - targets[:, 1]
    target_x = targets[:, 0] + 0.5 * target_widths
    target_y = targets[:, 1] + 0.5 * target_heights
    wx, wy, ww, wh = weights
    return torch.stack(
        (
            wx * (target_x - ctr_x) / widths,
            wy * (target_y - ctr_y) / heights,
            ww * torch.log(target_widths / widths),
            wh * torch.log(target_heights / heights),
        ),
        dim=1,
    )


def _intersection(a: Tensor, b: Tensor) -> Tensor:
    top_left = torch.max(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.min(a[:, None, 2:], b[None, :, 2:])
    return (bottom_right - top_left).clamp(min=0).prod(dim=2)


def grown_boxes(boxes: Tensor, margin: float) -> Tensor:
    """(N, 4) ``x1, y1, x2, y2`` boxes grown by ``margin`` times their width on the left and on the
    right, and times their height above and below."""
    if not margin:
        return boxes
    sides = boxes[:, 2:] - boxes[:, :2]  # (N, 2) width, height
    return boxes + margin * torch.cat((-sides, sides), dim=1)


def box_area(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def pairwise_iou(a: Tensor, b: Tensor) -> Tensor:
    """(A, 4), (B, 4) -> (A, B) intersection over union."""
    inter = _intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)


def pairwise_ioa(a: Tensor, b: Tensor) -> Tensor:
    """(A, 4), (B, 4) -> (A, B) intersection over the area of each box of ``a``."""
    return _intersection(a, b) / box_area(a)[:, None].clamp(min=torch.finfo(a.dtype).tiny)


# match_boxes' verdicts for a box that matched no ground truth
BACKGROUND = -1  # quality below the low threshold
IGNORED = -2  # between the thresholds, or covered by a crowd region


def match_boxes(quality: Tensor, high: float, low: float, allow_low_quality_matches: bool) -> Tensor:
    """Assign each box its best ground truth (Faster R-CNN's matching).

    Args:
        quality: (G, P) IoU of G ground-truth boxes with P boxes (anchors or proposals).
        high: a box matches at IoU >= ``high``.
        low: a box is background below ``low``; in between it is ``IGNORED``.
        allow_low_quality_matches: each ground truth also takes the boxes that overlap it most,
            whatever the IoU (so that every ground truth has at least one positive anchor).
    Returns:
        (P,) int64: the matched ground truth index, ``BACKGROUND`` or ``IGNORED``.
    """
    num_boxes = quality.shape[1]
    if quality.shape[0] == 0:
        return torch.full((num_boxes,), BACKGROUND, dtype=torch.int64, device=quality.device)
    best, matches = quality.max(dim=0)
    verdict = matches.clone()
    verdict[best < high] = IGNORED
    verdict[best < low] = BACKGROUND
    if allow_low_quality_matches:
        # every box tied for the best IoU of some ground truth (ties included, as Detectron)
        best_per_gt = quality.max(dim=1, keepdim=True).values
        _, boxes = ((quality == best_per_gt) & (best_per_gt > 0)).nonzero(as_tuple=True)
        verdict[boxes] = matches[boxes]
    return verdict


def sample_balanced(labels: Tensor, batch_size: int, positive_fraction: float) -> tuple[Tensor, Tensor]:
    """Draw at most ``batch_size`` boxes, up to ``positive_fraction`` of them positive, the rest
    negative, uniformly at random (the global torch generator).

    Args:
        labels: (P,) 1 positive, 0 negative, -1 neither.
    Returns:
        Indices of the sampled positives and of the sampled negatives.
    """
    positive = (labels == 1).nonzero().squeeze(1)
    negative = (labels == 0).nonzero().squeeze(1)
    num_positive = min(positive.numel(), int(batch_size * positive_fraction))
    num_negative = min(negative.numel(), batch_size - num_positive)
    positive = positive[torch.randperm(positive.numel(), device=labels.device)[:num_positive]]
    negative = negative[torch.randperm(negative.numel(), device=labels.device)[:num_negative]]
    return positive, negative
