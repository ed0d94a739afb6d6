"""Mask R-CNN (He et al. 2017): backbone + FPN, RPN, and box / mask / keypoint heads in parallel
on the RoIs. Inference maps CHW images in [0, 1] to torchvision-style result dicts."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from model.backbone import BackboneWithFPN
from model.config import ModelConfig
from model.keypoint_head import KeypointHead, KeypointPredictor
from model.roi_heads import BoxPredictor, ConvFCBoxHead, MaskHead, MaskPredictor, MLPBoxHead, RoIHeads
from model.rpn import AnchorGenerator, RegionProposalNetwork, RPNHead
from model.structures import Detections
from model.transform import (
    ImageBatch,
    paste_masks_in_image,
    preprocess,
    rescale_boxes,
    rescale_keypoints,
    rescale_ratios,
)
from model.weights.legacy import upgrade_legacy_keys


class MaskRCNN(nn.Module):
    """The detector. ``forward`` is inference (eval mode); the stages are public so that the
    Predictor can cache the pyramid of an image and run only the heads on a drawn box."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        # provenance of the loaded weights (registry name or file stem + hash); "" if none
        self.weights_version = ""
        v2 = config.variant == "v2"
        channels = config.fpn_channels
        norm = config.norm

        self.backbone = BackboneWithFPN(
            config.backbone_depth,
            fpn_norm=norm,
            frozen_bn_eps=config.frozen_bn_eps,
            body_norm=config.backbone_norm,
            out_channels=channels,
            body_width=config.backbone_width,
        )
        self.backbone.freeze_stages(config.trainable_backbone_layers)

        anchors = AnchorGenerator(config.anchor_sizes, config.anchor_aspect_ratios)
        self.rpn = RegionProposalNetwork(
            anchors,
            RPNHead(channels, anchors.num_anchors_per_location, conv_depth=2 if v2 else 1),
            pre_nms_top_n={"training": config.rpn_pre_nms_top_n_train, "testing": config.rpn_pre_nms_top_n_test},
            post_nms_top_n={"training": config.rpn_post_nms_top_n_train, "testing": config.rpn_post_nms_top_n_test},
            nms_thresh=config.rpn_nms_thresh,
            score_thresh=config.rpn_score_thresh,
            fg_iou_thresh=config.rpn_fg_iou_thresh,
            bg_iou_thresh=config.rpn_bg_iou_thresh,
            batch_size_per_image=config.rpn_batch_size_per_image,
            positive_fraction=config.rpn_positive_fraction,
        )

        box_head: nn.Module = (
            ConvFCBoxHead(
                channels, 7, conv_channels=channels, representation_size=config.box_head_dim, norm=norm or "bn"
            )
            if v2
            else MLPBoxHead(channels * 7 * 7, config.box_head_dim)
        )
        mask_channels = config.mask_head_channels
        keypoint_channels = config.keypoint_head_channels
        self.roi_heads = RoIHeads(
            box_head,
            BoxPredictor(config.box_head_dim, config.num_classes),
            bbox_reg_weights=config.bbox_reg_weights,
            score_thresh=config.box_score_thresh,
            nms_thresh=config.box_nms_thresh,
            detections_per_img=config.box_detections_per_img,
            mask_head=MaskHead(channels, (mask_channels,) * 4, norm=norm) if config.mask_on else None,
            mask_predictor=MaskPredictor(mask_channels, mask_channels, config.num_classes) if config.mask_on else None,
            keypoint_head=(
                KeypointHead(channels, (keypoint_channels,) * config.keypoint_head_convs)
                if config.keypoint_on
                else None
            ),
            keypoint_predictor=KeypointPredictor(keypoint_channels, config.num_keypoints)
            if config.keypoint_on
            else None,
            fg_iou_thresh=config.box_fg_iou_thresh,
            bg_iou_thresh=config.box_bg_iou_thresh,
            batch_size_per_image=config.box_batch_size_per_image,
            positive_fraction=config.box_positive_fraction,
            keypoint_box_margin=config.keypoint_box_margin,
        )
        self.register_load_state_dict_pre_hook(_upgrade_legacy_keys_hook)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # -- stages -----------------------------------------------------------------------------

    def preprocess(self, images: list[Tensor]) -> ImageBatch:
        c = self.config
        return preprocess(images, c.test_min_size, c.max_size, c.image_mean, c.image_std, c.size_divisible)

    def extract_features(self, batch: ImageBatch) -> list[Tensor]:
        """[P2..P6] of the batch; the input follows the weights' memory format."""
        x = batch.tensor
        if self.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)

    def detect(self, features: list[Tensor], batch: ImageBatch) -> Detections:
        """RPN + RoI heads: detections in the resized input's pixels."""
        proposals, _ = self.rpn(features, batch.image_sizes, batch.padded_size)
        return self.roi_heads(features, proposals, batch.image_sizes)

    def postprocess(self, detections: Detections, batch: ImageBatch) -> list[dict[str, Tensor]]:
        """Per image, torchvision's result dict in original image pixels, masks pasted (soft)."""
        results = []
        split = detections.counts
        fields: dict[str, list[Tensor]] = {
            "boxes": list(detections.boxes.split(split)),
            "labels": list(detections.labels.split(split)),
            "scores": list(detections.scores.split(split)),
        }
        if detections.masks is not None:
            fields["masks"] = list(detections.masks.split(split))
        if detections.keypoints is not None and detections.keypoint_scores is not None:
            fields["keypoints"] = list(detections.keypoints.split(split))
            fields["keypoints_scores"] = list(detections.keypoint_scores.split(split))
        for i, (size, original) in enumerate(zip(batch.sizes, batch.original_sizes)):
            ratios = rescale_ratios(size, original, batch.tensor.device)
            result = {key: values[i] for key, values in fields.items()}
            result["boxes"] = rescale_boxes(result["boxes"], ratios)
            if "masks" in result:
                result["masks"] = paste_masks_in_image(result["masks"], result["boxes"], original)
            if "keypoints" in result:
                result["keypoints"] = rescale_keypoints(result["keypoints"], ratios)
            results.append(result)
        return results

    # -- training ---------------------------------------------------------------------------

    def losses(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """The training losses of a batch (the module in training mode).

        Args:
            images: (3, H_i, W_i) float in [0, 1].
            targets: per image, in that image's pixels (continuous coordinates): ``boxes``
                (G, 4) ``x1, y1, x2, y2``; ``labels`` (G,) int64 in 1..C-1; ``masks`` (G, H_i, W_i)
                (mask head); ``keypoints`` (G, K, 3) ``(x, y, v)``, v > 0 labelled (keypoint
                head); optional ``crowd_boxes`` (C, 4), regions where nothing is sampled.
        Returns:
            ``loss_objectness``, ``loss_rpn_box_reg`` (RPN), ``loss_classifier``, ``loss_box_reg``
            (box head), ``loss_mask``, ``loss_keypoint`` (the heads that are on); scalars.
        """
        c = self.config
        sizes = c.min_size if isinstance(c.min_size, tuple) else (c.min_size,)
        # multi-scale training: each image's shorter side drawn from the config's sizes
        choice = torch.randint(len(sizes), (len(images),)).tolist()
        batch = preprocess(images, [sizes[i] for i in choice], c.max_size, c.image_mean, c.image_std, c.size_divisible)
        device = batch.tensor.device
        scaled = []
        for target, size, original in zip(targets, batch.sizes, batch.original_sizes):
            scale = rescale_ratios(original, size, device)  # (x, y) input pixels per image pixel
            boxes = target["boxes"].to(device)
            crowd = target.get("crowd_boxes")
            item = {
                "boxes": rescale_boxes(boxes.float(), scale),
                "labels": target["labels"].to(device),
                "crowd_boxes": rescale_boxes(crowd.to(device).float(), scale)
                if crowd is not None
                else boxes.new_zeros(0, 4).float(),
                "scale": scale,
            }
            if c.mask_on:
                item["masks"] = target["masks"].to(device)
                if "has_mask" in target:  # box-only ground truth: no mask loss (docs/decisions/0015)
                    item["has_mask"] = target["has_mask"].to(device)
            if c.keypoint_on:
                item["keypoints"] = rescale_keypoints(target["keypoints"].to(device).float(), scale)
            scaled.append(item)
        features = self.extract_features(batch)
        proposals, losses = self.rpn.forward_train(
            features,
            batch.image_sizes,
            batch.padded_size,
            [t["boxes"] for t in scaled],
            [t["crowd_boxes"] for t in scaled],
        )
        losses.update(self.roi_heads.forward_train(features, proposals, scaled))
        return losses

    # -- inference --------------------------------------------------------------------------

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        """Inference (eval mode): images (3, H_i, W_i), float in [0, 1], any sizes -> per image a
        dict with ``boxes`` (N, 4), ``labels`` (N,), ``scores`` (N,), and ``masks`` (N, 1, H_i, W_i)
        probabilities, ``keypoints`` (N, K, 3), ``keypoints_scores`` (N, K) when those heads are on.

        Training mode: ``targets`` in, the dict of ``losses`` out."""
        if self.training:
            if targets is None:
                raise RuntimeError("in training mode MaskRCNN needs targets; call .eval() for inference")
            return self.losses(images, targets)
        batch = self.preprocess(images)
        features = self.extract_features(batch)
        detections = self.detect(features, batch)
        return self.postprocess(detections, batch)


def _upgrade_legacy_keys_hook(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
) -> None:
    upgraded = upgrade_legacy_keys({k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)})
    for key in [k for k in state_dict if k.startswith(prefix)]:
        del state_dict[key]
    state_dict.update({prefix + k: v for k, v in upgraded.items()})
