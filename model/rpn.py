"""Region Proposal Network (Ren et al. 2015) over the FPN levels P2-P6: one anchor size per level
(32-512 px), three aspect ratios, a shared 3x3 conv head, and class-agnostic proposals after NMS.

Parameter names follow torchvision's ``rpn.head.*`` so that its checkpoints load as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

from model.box_ops import (
    BACKGROUND,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    match_boxes,
    nonempty_boxes,
    pairwise_ioa,
    pairwise_iou,
    sample_balanced,
    top_per_image,
)

# proposals with a side below this (input pixels) are dropped before NMS
_MIN_PROPOSAL_SIZE = 1e-3
# an anchor or proposal this much inside a crowd region (intersection over its own area) is
# neither positive nor negative (Detectron's crowd filter)
CROWD_IOA_THRESH = 0.7
# smooth-L1 turns from quadratic to linear at this regression error (Fast R-CNN in FPN's setting)
SMOOTH_L1_BETA = 1 / 9


class AnchorGenerator(nn.Module):
    """Anchors of every FPN level, laid out as the RPN head's outputs are flattened:
    row-major over the map, then one anchor per aspect ratio.

    Aspect ratio is height / width; an anchor of size s has area s**2, and corners rounded to
    integers around the cell's top-left pixel (torchvision's and Detectron's v1 convention).
    """

    def __init__(self, sizes: Sequence[int], aspect_ratios: Sequence[float]) -> None:
        super().__init__()
        self.sizes = tuple(sizes)
        self.aspect_ratios = tuple(aspect_ratios)
        # computed in float32 as torchvision does, so that rounding picks the same integers
        ratios = torch.tensor(self.aspect_ratios, dtype=torch.float32)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1 / h_ratios
        self.cell_anchors: list[Tensor] = []
        for size in self.sizes:
            ws = w_ratios * size
            hs = h_ratios * size
            self.cell_anchors.append((torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round())
        self._cache: dict[tuple, list[Tensor]] = {}

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.aspect_ratios)

    def forward(
        self, grid_sizes: list[tuple[int, int]], padded_size: tuple[int, int], dtype: torch.dtype, device: torch.device
    ) -> list[Tensor]:
        """Per level, (H_l * W_l * A, 4) anchors in input pixels, shared by all images."""
        key = (tuple(grid_sizes), padded_size, dtype, device)
        if key not in self._cache:
            if len(self._cache) > 16:
                self._cache.clear()
            self._cache[key] = [
                self._grid_anchors(grid, padded_size, cell.to(device=device, dtype=dtype))
                for grid, cell in zip(grid_sizes, self.cell_anchors)
            ]
        return self._cache[key]

    @staticmethod
    def _grid_anchors(grid: tuple[int, int], padded_size: tuple[int, int], cell: Tensor) -> Tensor:
        # The stride is the integer ratio of input to map size (torchvision's rule): 61 rather
        # than 64 for P6 of an 800-pixel-high input, whose P6 has 13 rows.
        stride_y = padded_size[0] // grid[0]
        stride_x = padded_size[1] // grid[1]
        shifts_x = torch.arange(grid[1], device=cell.device, dtype=torch.int64) * stride_x
        shifts_y = torch.arange(grid[0], device=cell.device, dtype=torch.int64) * stride_y
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=-1).reshape(-1, 1, 4)
        return (shifts + cell.view(1, -1, 4)).reshape(-1, 4)


class RPNHead(nn.Module):
    """Shared by all levels: ``conv_depth`` x (3x3 conv + ReLU), then per anchor an objectness
    logit and four box deltas."""

    def __init__(self, in_channels: int, num_anchors: int, conv_depth: int = 1) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            *(
                nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU(inplace=True))
                for _ in range(conv_depth)
            )
        )
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.zeros_(layer.bias)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: objectness (N, A, H, W) and deltas (N, 4A, H, W)."""
        objectness, deltas = [], []
        for feature in features:
            t = self.conv(feature)
            objectness.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return objectness, deltas


def flatten_level(objectness: Tensor, deltas: Tensor) -> tuple[Tensor, Tensor]:
    """(N, A, H, W), (N, 4A, H, W) -> (N, H*W*A), (N, H*W*A, 4) in anchor order."""
    n, a, h, w = objectness.shape
    objectness = objectness.permute(0, 2, 3, 1).reshape(n, -1)
    deltas = deltas.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
    return objectness, deltas


def label_anchors(
    anchors: Tensor,
    gt_boxes: list[Tensor],
    crowd_boxes: list[Tensor],
    fg_iou_thresh: float,
    bg_iou_thresh: float,
    batch_size_per_image: int,
    positive_fraction: float,
) -> tuple[Tensor, Tensor]:
    """RPN training targets: match anchors to ground truth, then sample a balanced minibatch.

    Args:
        anchors: (A, 4) anchors of all levels, shared by the images.
        gt_boxes: per image (G_i, 4) ground-truth boxes in input pixels.
        crowd_boxes: per image (C_i, 4) crowd regions: anchors inside them are not sampled.
    Returns:
        labels (N, A): 1 sampled positive, 0 sampled negative, -1 not sampled; and matched
        boxes (N, A, 4), the ground truth of each positive (anything for the others).
    """
    labels, matched = [], []
    for boxes, crowd in zip(gt_boxes, crowd_boxes):
        match = match_boxes(pairwise_iou(boxes, anchors), fg_iou_thresh, bg_iou_thresh, True)
        label = torch.full_like(match, -1)
        label[match >= 0] = 1
        label[match == BACKGROUND] = 0
        if crowd.numel():
            in_crowd = pairwise_ioa(anchors, crowd).max(dim=1).values >= CROWD_IOA_THRESH
            label[in_crowd & (label == 0)] = -1
        positive, negative = sample_balanced(label, batch_size_per_image, positive_fraction)
        label = torch.full_like(match, -1)
        label[positive], label[negative] = 1, 0
        labels.append(label)
        matched.append(boxes[match.clamp(min=0)] if boxes.numel() else torch.zeros_like(anchors))
    return torch.stack(labels), torch.stack(matched)


def rpn_losses(
    objectness: Tensor, deltas: Tensor, anchors: Tensor, labels: Tensor, matched_boxes: Tensor
) -> dict[str, Tensor]:
    """The RPN's two losses over the sampled anchors of all images.

    Args:
        objectness: (N, A) logits, anchors of all levels in ``AnchorGenerator`` order.
        deltas: (N, A, 4) predicted box deltas.
        anchors: (A, 4).
        labels: (N, A) from ``label_anchors``: 1 positive, 0 negative, -1 not sampled.
        matched_boxes: (N, A, 4) ground truth of the positives.
    Returns:
        ``loss_objectness``: binary cross-entropy, mean over sampled anchors;
        ``loss_rpn_box_reg``: smooth-L1 of the positives' deltas (unit weights), summed and
        divided by the number of sampled anchors.
    """
    sampled = labels >= 0
    positive = labels == 1
    _, anchor_index = positive.nonzero(as_tuple=True)
    targets = encode_boxes(matched_boxes[positive], anchors[anchor_index].to(matched_boxes.dtype), (1.0, 1.0, 1.0, 1.0))
    num_sampled = sampled.sum().clamp(min=1)
    box_loss = F.smooth_l1_loss(deltas[positive], targets, beta=SMOOTH_L1_BETA, reduction="sum") / num_sampled
    objectness_loss = (
        F.binary_cross_entropy_with_logits(objectness[sampled], labels[sampled].to(objectness.dtype), reduction="sum")
        / num_sampled
    )
    return {"loss_objectness": objectness_loss, "loss_rpn_box_reg": box_loss}


class RegionProposalNetwork(nn.Module):
    """Anchors + head + proposal selection; in training also the anchors' targets and losses."""

    def __init__(
        self,
        anchor_generator: AnchorGenerator,
        head: RPNHead,
        pre_nms_top_n: dict[str, int],
        post_nms_top_n: dict[str, int],
        nms_thresh: float,
        score_thresh: float = 0.0,
        fg_iou_thresh: float = 0.7,
        bg_iou_thresh: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
    ) -> None:
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.pre_nms_top_n = pre_nms_top_n
        self.post_nms_top_n = post_nms_top_n
        self.nms_thresh = nms_thresh
        self.score_thresh = score_thresh
        self.fg_iou_thresh = fg_iou_thresh
        self.bg_iou_thresh = bg_iou_thresh
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    def forward(
        self, features: list[Tensor], image_sizes: Tensor, padded_size: tuple[int, int]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """
        Args:
            features: [P2..P6], each (N, C, H_l, W_l).
            image_sizes: (N, 2) ``(height, width)`` of each resized image before padding.
            padded_size: ``(H, W)`` of the padded input batch.
        Returns:
            Per image, proposals (P_i, 4) in input pixels, best first, and their objectness
            probabilities (P_i,).
        """
        objectness, deltas, anchors = self._predict(features, padded_size)
        return self.select_proposals(objectness, deltas, anchors, image_sizes)

    def forward_train(
        self,
        features: list[Tensor],
        image_sizes: Tensor,
        padded_size: tuple[int, int],
        gt_boxes: list[Tensor],
        crowd_boxes: list[Tensor],
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Proposals (per image (P_i, 4), detached) and the losses of ``rpn_losses``.

        ``gt_boxes`` and ``crowd_boxes`` are per image, in input pixels."""
        objectness, deltas, anchors = self._predict(features, padded_size)
        proposals, _ = self.select_proposals(objectness, deltas, anchors, image_sizes)
        flat = [flatten_level(o, d) for o, d in zip(objectness, deltas)]
        all_anchors = torch.cat(anchors)
        with torch.no_grad():
            labels, matched = label_anchors(
                all_anchors,
                gt_boxes,
                crowd_boxes,
                self.fg_iou_thresh,
                self.bg_iou_thresh,
                self.batch_size_per_image,
                self.positive_fraction,
            )
        losses = rpn_losses(
            torch.cat([o for o, _ in flat], dim=1), torch.cat([d for _, d in flat], dim=1), all_anchors, labels, matched
        )
        return proposals, losses

    def _predict(
        self, features: list[Tensor], padded_size: tuple[int, int]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per level: objectness (N, A, H, W), deltas (N, 4A, H, W) and anchors (H*W*A, 4)."""
        objectness, deltas = self.head(features)
        # boxes in float32 even when the features are float16 (mixed precision)
        box_dtype = torch.float64 if features[0].dtype == torch.float64 else torch.float32
        objectness = [o.to(box_dtype) for o in objectness]
        deltas = [d.to(box_dtype) for d in deltas]
        anchors = self.anchor_generator(
            [tuple(f.shape[-2:]) for f in features], padded_size, box_dtype, features[0].device
        )
        return objectness, deltas, anchors

    def select_proposals(
        self, objectness: list[Tensor], deltas: list[Tensor], anchors: list[Tensor], image_sizes: Tensor
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Top-k per level by objectness, decode, clip, drop tiny boxes, NMS per level, top-k per
        image; all images at once."""
        mode = "training" if self.training else "testing"
        num_images = objectness[0].shape[0]
        logits, selected_deltas, selected_anchors, levels = [], [], [], []
        for level, (obj, dlt, anc) in enumerate(zip(objectness, deltas, anchors)):
            obj, dlt = flatten_level(obj.detach(), dlt.detach())
            k = min(self.pre_nms_top_n[mode], obj.shape[1])
            top_logits, top_idx = obj.topk(k, dim=1)
            logits.append(top_logits)
            selected_deltas.append(torch.gather(dlt, 1, top_idx[..., None].expand(-1, -1, 4)))
            selected_anchors.append(anc[top_idx])
            levels.append(torch.full((k,), level, dtype=torch.int64, device=obj.device))
        logits = torch.cat(logits, dim=1)  # (N, K)
        level = torch.cat(levels)  # (K,)
        # decoding only the top-k is the same arithmetic as decoding every anchor, and cheaper
        boxes = decode_boxes(
            torch.cat(selected_deltas, dim=1).reshape(-1, 4),
            torch.cat(selected_anchors, dim=1).reshape(-1, 4),
            (1.0, 1.0, 1.0, 1.0),
        ).view(num_images, -1, 4)
        boxes = clip_boxes(boxes, image_sizes[:, None, :])
        scores = torch.sigmoid(logits)

        valid = nonempty_boxes(boxes, _MIN_PROPOSAL_SIZE) & (scores >= self.score_thresh)
        image_index, candidate = valid.nonzero(as_tuple=True)
        boxes, scores = boxes[image_index, candidate], scores[image_index, candidate]
        num_levels = len(objectness)
        keep = batched_nms(boxes, scores, image_index * num_levels + level[candidate], self.nms_thresh)
        keep, counts = top_per_image(keep, image_index, num_images, self.post_nms_top_n[mode])
        return list(boxes[keep].split(counts)), list(scores[keep].split(counts))
