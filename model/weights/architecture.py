"""The config a torchvision-layout state dict was saved from, read off its keys and shapes (for
files that store no config: torchvision's, and state dicts saved by hand)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from model.builders import config_for
from model.config import ModelConfig
from model.weights.legacy import upgrade_legacy_keys


def infer_config(state_dict: dict[str, Tensor]) -> ModelConfig:
    """The architecture a torchvision-layout state dict was saved from (no config stored)."""
    state_dict = upgrade_legacy_keys(state_dict)
    if any(k.startswith("roi_heads.keypoint_head.") for k in state_dict):
        name = "keypointrcnn_resnet50_fpn"
    elif "roi_heads.box_head.5.weight" in state_dict:
        name = "maskrcnn_resnet50_fpn_v2"
    elif "roi_heads.box_head.fc6.weight" in state_dict:
        name = "maskrcnn_resnet50_fpn"
    else:
        raise ValueError("not a Mask R-CNN / Keypoint R-CNN state dict (no box head weights)")
    overrides: dict[str, Any] = {"num_classes": state_dict["roi_heads.box_predictor.cls_score.weight"].shape[0]}
    if name == "keypointrcnn_resnet50_fpn":
        overrides["num_keypoints"] = state_dict["roi_heads.keypoint_predictor.kps_score_lowres.weight"].shape[1]
    overrides["mask_on"] = any(k.startswith("roi_heads.mask_head.") for k in state_dict)
    bottleneck = "backbone.body.layer1.0.conv3.weight" in state_dict
    blocks = len({k.split(".")[3] for k in state_dict if k.startswith("backbone.body.layer3.")})
    layer1_blocks = len({k.split(".")[3] for k in state_dict if k.startswith("backbone.body.layer1.")})
    if bottleneck:
        overrides["backbone_depth"] = 101 if blocks == 23 else 50
    else:
        overrides["backbone_depth"] = 18 if layer1_blocks == 2 else 34
    return config_for(name, **overrides)
