"""The RoI heads of Mask R-CNN: box (classification + class-specific regression), mask (FCN,
per-class sigmoid) and keypoint (FCN, softmax over locations), run on RoIAlign features.

Each head is a small module; its inference step and its loss are plain functions beside it.
``RoIHeads`` composes them, and in training also matches and samples the RoIs. Parameter names
follow torchvision's ``roi_heads.*``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

import ops
from model.backbone import conv_norm
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
from model.rpn import CROWD_IOA_THRESH, SMOOTH_L1_BETA
from model.structures import Detections

# P2..P5: the RoI heads pool from these; P6 only feeds the RPN
ROI_FEATURE_SCALES: tuple[float, ...] = (1 / 4, 1 / 8, 1 / 16, 1 / 32)
_MIN_DETECTION_SIZE = 1e-2


def roi_align_fpn(features: list[Tensor], boxes: list[Tensor], output_size: int) -> Tensor:
    """(K, C, S, S) RoIAlign features of image-coordinate boxes, each from its FPN level."""
    return ops.multilevel_roi_align(
        features[: len(ROI_FEATURE_SCALES)], boxes, output_size, ROI_FEATURE_SCALES, sampling_ratio=2
    )


# ---------------------------------------------------------------------------------------------
# box head


class MLPBoxHead(nn.Module):
    """v1 box head: (R, C, 7, 7) -> two FC layers of 1024 with ReLU -> (R, 1024)."""

    def __init__(self, in_features: int, representation_size: int = 1024) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.fc6(x.flatten(start_dim=1)), inplace=True)
        return F.relu(self.fc7(x), inplace=True)


class ConvFCBoxHead(nn.Sequential):
    """v2 box head: 4 x (3x3 conv 256 + BatchNorm + ReLU), then one FC of 1024 with ReLU."""

    def __init__(self, in_channels: int, resolution: int, conv_channels: int = 256, num_convs: int = 4,
                 representation_size: int = 1024, norm: str = "bn") -> None:  # fmt: skip
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(num_convs):
            layers.append(conv_norm(channels, conv_channels, 3, norm=norm, relu=True))
            channels = conv_channels
        layers += [nn.Flatten(), nn.Linear(channels * resolution**2, representation_size), nn.ReLU(inplace=True)]
        super().__init__(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class BoxPredictor(nn.Module):
    """(R, D) -> class logits (R, num_classes) and per-class deltas (R, 4 * num_classes)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes)
        self.bbox_pred = nn.Linear(in_features, num_classes * 4)

    def reset_parameters(self) -> None:
        self.cls_score.reset_parameters()
        self.bbox_pred.reset_parameters()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)


def fast_rcnn_inference(
    class_logits: Tensor,
    box_deltas: Tensor,
    proposals: Tensor,
    proposal_image: Tensor,
    image_sizes: Tensor,
    bbox_reg_weights: tuple[float, float, float, float],
    score_thresh: float,
    nms_thresh: float,
    detections_per_img: int,
) -> Detections:
    """Turn box-head outputs into detections: per-class boxes and softmax scores, background
    dropped, score threshold, class-wise NMS, best ``detections_per_img`` per image.

    Args:
        class_logits: (R, C) logits, column 0 the background.
        box_deltas: (R, 4C) class-specific deltas.
        proposals: (R, 4) the RoIs of all images, grouped by image.
        proposal_image: (R,) image index of every RoI.
        image_sizes: (N, 2) ``(height, width)`` of the resized images (boxes are clipped to them).
    Returns:
        Detections (D boxes in input pixels, grouped by image, best first in an image).
    """
    num_rois, num_classes = class_logits.shape
    # float32 boxes and scores even when the head ran in float16
    dtype = torch.float64 if proposals.dtype == torch.float64 else torch.float32
    class_logits, box_deltas, proposals = class_logits.to(dtype), box_deltas.to(dtype), proposals.to(dtype)
    boxes = decode_boxes(box_deltas, proposals, bbox_reg_weights)  # (R, C, 4)
    boxes = clip_boxes(boxes, image_sizes[proposal_image][:, None, :])
    scores = F.softmax(class_logits, -1)

    # candidates are (RoI, foreground class) pairs, in torchvision's row-major order
    boxes = boxes[:, 1:].reshape(-1, 4)
    scores = scores[:, 1:].reshape(-1)
    labels = torch.arange(1, num_classes, device=scores.device).repeat(num_rois)
    image = proposal_image.repeat_interleave(num_classes - 1)

    candidate = ((scores > score_thresh) & nonempty_boxes(boxes, _MIN_DETECTION_SIZE)).nonzero().squeeze(1)
    boxes, scores, labels, image = boxes[candidate], scores[candidate], labels[candidate], image[candidate]
    keep = batched_nms(boxes, scores, image * num_classes + labels, nms_thresh)
    keep, counts = top_per_image(keep, image, image_sizes.shape[0], detections_per_img)
    return Detections(boxes=boxes[keep], scores=scores[keep], labels=labels[keep], counts=counts)


def fast_rcnn_losses(
    class_logits: Tensor, box_deltas: Tensor, labels: Tensor, regression_targets: Tensor
) -> dict[str, Tensor]:
    """The box head's losses over the sampled RoIs of all images.

    Args:
        class_logits: (R, C) logits, column 0 the background.
        box_deltas: (R, 4C) class-specific deltas.
        labels: (R,) int64 ground-truth class of each RoI, 0 for background.
        regression_targets: (R, 4) encoded deltas to each RoI's ground truth (used for
            foreground RoIs only).
    Returns:
        ``loss_classifier``: softmax cross-entropy, mean over RoIs; ``loss_box_reg``: smooth-L1
        of the ground-truth class's deltas of the foreground RoIs, summed, divided by R.
    """
    num_rois = class_logits.shape[0]
    class_logits, box_deltas = class_logits.float(), box_deltas.float()
    foreground = (labels > 0).nonzero().squeeze(1)
    deltas = box_deltas.view(num_rois, -1, 4)[foreground, labels[foreground]]
    box_loss = F.smooth_l1_loss(
        deltas, regression_targets[foreground].to(deltas.dtype), beta=SMOOTH_L1_BETA, reduction="sum"
    ) / max(num_rois, 1)
    return {"loss_classifier": F.cross_entropy(class_logits, labels), "loss_box_reg": box_loss}


# ---------------------------------------------------------------------------------------------
# mask head


class MaskHead(nn.Sequential):
    """FCN: 4 x (3x3 conv 256 [+ BatchNorm in v2] + ReLU) on (R, C, 14, 14) RoI features."""

    def __init__(self, in_channels: int, layers: tuple[int, ...] = (256, 256, 256, 256), norm: bool = False) -> None:
        blocks = []
        channels = in_channels
        for out_channels in layers:
            blocks.append(conv_norm(channels, out_channels, 3, norm=norm, relu=True))
            channels = out_channels
        super().__init__(*blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


class MaskPredictor(nn.Module):
    """2x2 stride-2 deconv + ReLU, then a 1x1 conv to one mask logit map per class:
    (R, 256, 14, 14) -> (R, num_classes, 28, 28)."""

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int) -> None:
        super().__init__()
        self.conv5_mask = nn.ConvTranspose2d(in_channels, dim_reduced, 2, stride=2)
        self.relu = nn.ReLU(inplace=True)
        self.mask_fcn_logits = nn.Conv2d(dim_reduced, num_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, param in self.named_parameters():
            if "weight" in name:
                nn.init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.zeros_(param)

    def forward(self, x: Tensor, classes: Tensor | None = None) -> Tensor:
        """With ``classes`` (R,), only the logits of each RoI's class: (R, 1, 28, 28). The masks
        of the other classes are never looked at in inference, so they are not computed."""
        x = self.relu(self.conv5_mask(x))
        if classes is None:
            return self.mask_fcn_logits(x)
        weight = self.mask_fcn_logits.weight[classes, :, 0, 0]  # (R, D)
        bias = self.mask_fcn_logits.bias[classes]
        return (torch.einsum("rdhw,rd->rhw", x, weight) + bias[:, None, None])[:, None]


def mask_rcnn_inference(mask_logits: Tensor, labels: Tensor) -> Tensor:
    """Per-class sigmoid masks of the predicted classes.

    Args:
        mask_logits: (R, C, M, M) logits of all classes, or (R, 1, M, M) of each RoI's class.
        labels: (R,) predicted class of each RoI.
    Returns:
        (R, 1, M, M) mask probabilities in the RoI's frame.
    """
    if mask_logits.shape[1] > 1:
        mask_logits = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels][:, None]
    return mask_logits.sigmoid()


def mask_targets(gt_masks: Tensor, gt_index: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Ground-truth masks cropped to RoIs, resampled to ``size`` x ``size`` and thresholded.

    Args:
        gt_masks: (G, H, W) masks of one image's ground truth, any dtype, in that image's pixels.
        gt_index: (R,) the ground truth each RoI is matched to.
        boxes: (R, 4) RoIs in the same pixels as the masks (continuous coordinates: pixel (i, j)
            covers [j, j+1) x [i, i+1), hence ``aligned=True``).
    Returns:
        (R, size, size) float32 in {0, 1}: each bin the mean of its bilinear samples, at least 0.5 (Detectron2's binary targets; the blur of resampling a binary mask would
        otherwise soften every edge).
    """
    if boxes.shape[0] == 0:
        return gt_masks.new_zeros((0, size, size), dtype=torch.float32)
    rois = torch.cat((gt_index[:, None].to(boxes.dtype), boxes), dim=1).float()
    # adaptive sampling (ceil(side / size)^2 points a bin), as Detectron2: a bin's value is the
    # share of its area inside the mask, however large the box
    resampled = ops.roi_align(gt_masks[:, None].float(), rois, size, 1.0, sampling_ratio=0, aligned=True)[:, 0]
    return (resampled >= 0.5).float()


def mask_rcnn_loss(mask_logits: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    """Per-pixel sigmoid binary cross-entropy on the mask of each RoI's ground-truth class only:
    the other classes' masks get no gradient (the paper's decoupling of masks and classes).

    Args:
        mask_logits: (R, C, M, M) logits of all classes, or (R, 1, M, M) of the ground-truth class.
        labels: (R,) ground-truth class of each (foreground) RoI.
        targets: (R, M, M) mask targets in [0, 1] (``mask_targets``).
    Returns:
        Scalar, mean over RoIs and pixels (0, still attached to the graph, for R = 0).
    """
    if mask_logits.shape[0] == 0:
        return mask_logits.sum() * 0
    if mask_logits.shape[1] > 1:
        mask_logits = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]
    else:
        mask_logits = mask_logits[:, 0]
    return F.binary_cross_entropy_with_logits(mask_logits.float(), targets.to(torch.float32))


# ---------------------------------------------------------------------------------------------
# keypoint head


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


# ---------------------------------------------------------------------------------------------


@dataclass
class SampledRoIs:
    """The RoIs of one image drawn for a training step: foreground first."""

    boxes: Tensor  # (R, 4) input pixels
    labels: Tensor  # (R,) ground-truth class, 0 for background
    gt_index: Tensor  # (R,) matched ground truth (0 for background RoIs: meaningless there)


class RoIHeads(nn.Module):
    """Box head, then the mask and keypoint heads on the detected boxes."""

    def __init__(
        self,
        box_head: nn.Module,
        box_predictor: BoxPredictor,
        bbox_reg_weights: tuple[float, float, float, float],
        score_thresh: float,
        nms_thresh: float,
        detections_per_img: int,
        mask_head: MaskHead | None = None,
        mask_predictor: MaskPredictor | None = None,
        keypoint_head: KeypointHead | None = None,
        keypoint_predictor: KeypointPredictor | None = None,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.5,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
    ) -> None:
        super().__init__()
        self.fg_iou_thresh = fg_iou_thresh
        self.bg_iou_thresh = bg_iou_thresh
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.bbox_reg_weights = bbox_reg_weights
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.mask_head = mask_head
        self.mask_predictor = mask_predictor
        self.keypoint_head = keypoint_head
        self.keypoint_predictor = keypoint_predictor

    @property
    def has_mask(self) -> bool:
        return self.mask_head is not None

    @property
    def has_keypoint(self) -> bool:
        return self.keypoint_head is not None

    def forward(self, features: list[Tensor], proposals: list[Tensor], image_sizes: Tensor) -> Detections:
        """Detections for all images, in input pixels, with mask probabilities (D, 1, 28, 28) in
        each box's frame and keypoints (D, K, 3) when those heads are on."""
        class_logits, box_deltas = self.classify(features, proposals)
        proposal_image = torch.repeat_interleave(
            torch.arange(len(proposals), device=image_sizes.device),
            torch.tensor([p.shape[0] for p in proposals], device=image_sizes.device),
        )
        detections = fast_rcnn_inference(
            class_logits, box_deltas, torch.cat(proposals), proposal_image, image_sizes,
            self.bbox_reg_weights, self.score_thresh, self.nms_thresh, self.detections_per_img,
        )  # fmt: skip
        boxes = list(detections.boxes.split(detections.counts))
        if self.has_mask:
            detections.masks = self.predict_masks(features, boxes, detections.labels)
        if self.has_keypoint:
            detections.keypoints, detections.keypoint_scores = self.predict_keypoints(features, boxes)
        return detections

    def forward_train(
        self, features: list[Tensor], proposals: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """The losses of the box head and, when on, of the mask and keypoint heads.

        Args:
            features: [P2..P6] of the batch.
            proposals: per image (P_i, 4) RPN proposals in input pixels.
            targets: per image, in input pixels: ``boxes`` (G, 4), ``labels`` (G,),
                ``crowd_boxes`` (C, 4), and for the heads that are on ``masks`` (G, H0, W0) in
                the original image's pixels with ``scale`` (2,) = input / original pixels
                ``(x, y)``, and ``keypoints`` (G, K, 3).
        """
        sampled = [self.sample_rois(p, t) for p, t in zip(proposals, targets)]
        boxes = [s.boxes for s in sampled]
        labels = torch.cat([s.labels for s in sampled])
        regression = torch.cat([
            encode_boxes(t["boxes"][s.gt_index], s.boxes, self.bbox_reg_weights) if t["boxes"].numel()
            else torch.zeros_like(s.boxes) for s, t in zip(sampled, targets)
        ])  # fmt: skip
        class_logits, box_deltas = self.classify(features, boxes)
        losses = fast_rcnn_losses(class_logits, box_deltas, labels, regression)

        # the mask and keypoint heads train on the foreground RoIs of the sample
        foreground = [s.labels > 0 for s in sampled]
        fg_boxes = [s.boxes[f] for s, f in zip(sampled, foreground)]
        fg_gt = [s.gt_index[f] for s, f in zip(sampled, foreground)]
        if self.has_mask:
            assert self.mask_head is not None and self.mask_predictor is not None
            fg_labels = labels[labels > 0]
            x = roi_align_fpn(features, fg_boxes, 14)
            logits = self.mask_predictor(self.mask_head(x), fg_labels)
            mask_size = logits.shape[-1]
            gt_masks = torch.cat([
                mask_targets(t["masks"], g, b / t["scale"].to(b.dtype).repeat(2), mask_size)
                for b, g, t in zip(fg_boxes, fg_gt, targets)
            ])  # fmt: skip
            losses["loss_mask"] = mask_rcnn_loss(logits, fg_labels, gt_masks)
        if self.has_keypoint:
            assert self.keypoint_head is not None and self.keypoint_predictor is not None
            # only RoIs whose ground truth has labelled keypoints
            keypoints, kp_boxes = [], []
            for b, g, t in zip(fg_boxes, fg_gt, targets):
                points = t["keypoints"][g]
                labelled = (points[..., 2] > 0).any(dim=1)
                keypoints.append(points[labelled])
                kp_boxes.append(b[labelled])
            x = roi_align_fpn(features, kp_boxes, 14)
            logits = self.keypoint_predictor(self.keypoint_head(x))
            heatmap_targets, valid = keypoints_to_heatmap(torch.cat(keypoints), torch.cat(kp_boxes), logits.shape[-1])
            losses["loss_keypoint"] = keypoint_rcnn_loss(logits, heatmap_targets, valid)
        return losses

    def sample_rois(self, proposals: Tensor, target: dict[str, Tensor]) -> SampledRoIs:
        """Match one image's proposals (and its ground-truth boxes, added as proposals) to the
        ground truth and draw ``batch_size_per_image`` RoIs, ``positive_fraction`` foreground."""
        gt_boxes = target["boxes"].to(proposals.dtype)
        candidates = torch.cat((proposals.detach(), gt_boxes))
        match = match_boxes(pairwise_iou(gt_boxes, candidates), self.fg_iou_thresh, self.bg_iou_thresh, False)
        label = torch.full_like(match, -1)
        label[match >= 0] = 1
        label[match == BACKGROUND] = 0
        crowd = target["crowd_boxes"]
        if crowd.numel():
            in_crowd = pairwise_ioa(candidates, crowd.to(candidates.dtype)).max(dim=1).values >= CROWD_IOA_THRESH
            label[in_crowd & (label == 0)] = -1
        positive, negative = sample_balanced(label, self.batch_size_per_image, self.positive_fraction)
        keep = torch.cat((positive, negative))
        gt_index = match[keep].clamp(min=0)
        labels = torch.cat((target["labels"][gt_index[: positive.numel()]], match.new_zeros(negative.numel())))
        return SampledRoIs(boxes=candidates[keep], labels=labels, gt_index=gt_index)

    def classify(self, features: list[Tensor], boxes: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Box head on RoIs: class logits (R, C) and class-specific deltas (R, 4C)."""
        x = roi_align_fpn(features, boxes, 7)
        return self.box_predictor(self.box_head(x))

    def predict_masks(self, features: list[Tensor], boxes: list[Tensor], labels: Tensor) -> Tensor:
        """(R, 1, 28, 28) mask probabilities for the boxes (per image) and their classes."""
        assert self.mask_head is not None and self.mask_predictor is not None
        x = roi_align_fpn(features, boxes, 14)
        logits = self.mask_predictor(self.mask_head(x), labels)
        return mask_rcnn_inference(logits, labels)

    def predict_keypoints(self, features: list[Tensor], boxes: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Keypoints (R, K, 3) and their scores (R, K) for the boxes (per image)."""
        assert self.keypoint_head is not None and self.keypoint_predictor is not None
        x = roi_align_fpn(features, boxes, 14)
        logits = self.keypoint_predictor(self.keypoint_head(x))
        return keypoint_rcnn_inference(logits, torch.cat(boxes))
