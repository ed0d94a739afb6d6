"""The RoI heads of Mask R-CNN: box (classification + class-specific regression), mask (FCN,
per-class sigmoid) and keypoint (FCN, softmax over locations; ``model.keypoint_head``), run on
RoIAlign features.

Each head is a small module; its inference step and its loss are plain functions beside it.
``RoIHeads`` composes them, and in training also matches and samples the RoIs. Parameter names
follow torchvision's ``roi_heads.*``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import ops
from model.backbone import conv_norm
from model.box_ops import (
    BACKGROUND,
    best_after_nms,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    grown_boxes,
    match_boxes,
    nonempty_boxes,
    pairwise_ioa,
    pairwise_iou,
    sample_balanced,
)
from model.keypoint_head import (
    KeypointHead,
    KeypointPredictor,
    keypoint_rcnn_inference,
    keypoint_rcnn_loss,
    keypoints_to_heatmap,
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

    def __init__(
        self,
        in_channels: int,
        resolution: int,
        conv_channels: int = 256,
        num_convs: int = 4,
        representation_size: int = 1024,
        norm: str = "bn",
    ) -> None:
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
    groups = image * num_classes + labels
    keep, counts = best_after_nms(boxes, scores, groups, nms_thresh, image, image_sizes.shape[0], detections_per_img)
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
        (R, size, size) float32 in {0, 1}: each bin the mean of its bilinear samples, at least 0.5
        (Detectron2's binary targets; the blur of resampling a binary mask would otherwise soften
        every edge).
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
# all heads on the RoIs


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
        keypoint_box_margin: float = 0.0,
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
        self.keypoint_box_margin = keypoint_box_margin

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
            class_logits,
            box_deltas,
            torch.cat(proposals),
            proposal_image,
            image_sizes,
            self.bbox_reg_weights,
            self.score_thresh,
            self.nms_thresh,
            self.detections_per_img,
        )
        boxes = list(detections.boxes.split(detections.counts))
        if self.has_mask:
            detections.masks = self.predict_masks(features, boxes, detections.labels)
        if self.has_keypoint:
            detections.keypoints, detections.keypoint_scores = self.predict_detected_keypoints(features, boxes)
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
                ``(x, y)`` and optionally ``has_mask`` (G,) bool (False: box only, no mask
                loss), and ``keypoints`` (G, K, 3).
        """
        sampled = [self.sample_rois(p, t) for p, t in zip(proposals, targets)]
        boxes = [s.boxes for s in sampled]
        labels = torch.cat([s.labels for s in sampled])
        regression = torch.cat(
            [
                encode_boxes(t["boxes"][s.gt_index], s.boxes, self.bbox_reg_weights)
                if t["boxes"].numel()
                else torch.zeros_like(s.boxes)
                for s, t in zip(sampled, targets)
            ]
        )
        class_logits, box_deltas = self.classify(features, boxes)
        losses = fast_rcnn_losses(class_logits, box_deltas, labels, regression)

        # the mask and keypoint heads train on the foreground RoIs of the sample
        foreground = [s.labels > 0 for s in sampled]
        fg_boxes = [s.boxes[f] for s, f in zip(sampled, foreground)]
        fg_gt = [s.gt_index[f] for s, f in zip(sampled, foreground)]
        if self.has_mask:
            assert self.mask_head is not None and self.mask_predictor is not None
            # only RoIs whose ground truth has a mask: a box-only one teaches the box head alone
            with_mask = [
                t["has_mask"][g] if "has_mask" in t else torch.ones_like(g, dtype=torch.bool)
                for g, t in zip(fg_gt, targets)
            ]
            mask_boxes = [b[m] for b, m in zip(fg_boxes, with_mask)]
            mask_gt = [g[m] for g, m in zip(fg_gt, with_mask)]
            fg_labels = labels[labels > 0][torch.cat(with_mask)]
            x = roi_align_fpn(features, mask_boxes, 14)
            logits = self.mask_predictor(self.mask_head(x), fg_labels)
            mask_size = logits.shape[-1]
            gt_masks = torch.cat(
                [
                    mask_targets(t["masks"], g, b / t["scale"].to(b.dtype).repeat(2), mask_size)
                    for b, g, t in zip(mask_boxes, mask_gt, targets)
                ]
            )
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

    def predict_detected_keypoints(self, features: list[Tensor], boxes: list[Tensor]) -> tuple[Tensor, Tensor]:
        """:meth:`predict_keypoints` on boxes the model detected, each grown by ``keypoint_box_margin``:
        a detected box often ends inside the object's extreme points (``ModelConfig.keypoint_box_margin``)."""
        return self.predict_keypoints(features, [grown_boxes(b, self.keypoint_box_margin) for b in boxes])

    def predict_keypoints(self, features: list[Tensor], boxes: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Keypoints (R, K, 3) and their scores (R, K) for the boxes as given (per image)."""
        assert self.keypoint_head is not None and self.keypoint_predictor is not None
        x = roi_align_fpn(features, boxes, 14)
        logits = self.keypoint_predictor(self.keypoint_head(x))
        return keypoint_rcnn_inference(logits, torch.cat(boxes))
