"""Our architectures under torchvision's builder names (``maskrcnn_resnet50_fpn``, ...): the
``ModelConfig`` each name stands for, torchvision's builder keyword arguments applied to it, and
the one "unknown architecture" error.

``build_model`` (a name and optional weights -> a model) lives in ``model.weights.resolve``:
the weights registry needs these configs, so this module imports nothing of the weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from model import synthetic
from model.config import (
    COCO_PERSON_CATEGORY_NAMES,
    COCO_PERSON_FLIP_MAP,
    COCO_PERSON_KEYPOINT_NAMES,
    COCO_PERSON_SKELETON,
    ModelConfig,
    skeleton_from_coco,
)

# name -> the config torchvision's builder of that name makes with weights=None
ARCHITECTURES: dict[str, ModelConfig] = {
    "maskrcnn_resnet50_fpn": ModelConfig(),
    "maskrcnn_resnet50_fpn_v2": ModelConfig(variant="v2"),
    "keypointrcnn_resnet50_fpn": ModelConfig(
        class_names=COCO_PERSON_CATEGORY_NAMES,
        keypoint_names=COCO_PERSON_KEYPOINT_NAMES,
        keypoint_skeleton=COCO_PERSON_SKELETON,
        keypoint_flip_map=COCO_PERSON_FLIP_MAP,
        mask_on=False,
        keypoint_on=True,
        min_size=(640, 672, 704, 736, 768, 800),
    ),
    # Small and fast, trained from random init (docs/decisions/0007-training.md): ResNet-18 at half
    # width with GroupNorm, a 64-channel FPN with GroupNorm, narrow heads, masks and keypoints,
    # about 320 px; 4.2 M parameters.
    # Its default label space is the synthetic shapes' (model.synthetic), as the demo model's.
    "maskrcnn_resnet18_fpn_small": ModelConfig(
        class_names=("__background__", *synthetic.CATEGORY_NAMES),
        keypoint_names=synthetic.KEYPOINT_NAMES,
        keypoint_skeleton=skeleton_from_coco(synthetic.SKELETON),
        keypoint_flip_map=synthetic.FLIP_MAP,
        keypoint_on=True,
        backbone_depth=18,
        backbone_norm="gn",
        head_norm="gn",
        trainable_backbone_layers=5,
        backbone_width=32,
        fpn_channels=64,
        box_head_dim=256,
        mask_head_channels=64,
        keypoint_head_channels=64,
        keypoint_head_convs=4,
        min_size=(224, 256, 288, 320),
        max_size=533,
        anchor_sizes=(16, 32, 64, 128, 256),
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=500,
        rpn_post_nms_top_n_test=300,
        box_batch_size_per_image=64,
        box_detections_per_img=50,
        # measured on the demo model: a sixth fewer keypoints off by more than their tolerance
        # (docs/decisions/0013-learning-loop.md, "Keypoints at the box's edge")
        keypoint_box_margin=0.08,
    ),
}

_CONFIG_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}


def generic_class_names(num_classes: int) -> tuple[str, ...]:
    return ("__background__",) + tuple(f"class_{i}" for i in range(1, num_classes))


def check_architecture(name: str) -> None:
    """Refuse a name that is not one of ``ARCHITECTURES``, naming those that are."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")


def config_for(name: str, **kwargs: Any) -> ModelConfig:
    """The config of architecture ``name`` with torchvision builder keyword arguments applied.

    ``num_classes`` and ``num_keypoints`` keep the default names when they match them and get
    generic ones otherwise; ``class_names`` / ``keypoint_names`` set names directly. Any
    ``ModelConfig`` field is accepted too (``backbone_depth``, ``mask_on``, ...).
    """
    check_architecture(name)
    config = ARCHITECTURES[name]
    kwargs = dict(kwargs)
    for unsupported in (
        "weights_backbone",
        "rpn_anchor_generator",
        "rpn_head",
        "box_roi_pool",
        "box_head",
        "box_predictor",
        "mask_roi_pool",
        "mask_head",
        "mask_predictor",
        "keypoint_roi_pool",
        "keypoint_head",
        "keypoint_predictor",
    ):
        if kwargs.pop(unsupported, None) is not None:
            raise TypeError(f"{unsupported}: custom modules are not supported; set ModelConfig fields instead")
    kwargs.pop("progress", None)

    num_classes = kwargs.pop("num_classes", None)
    if num_classes is not None and "class_names" not in kwargs and num_classes != config.num_classes:
        kwargs["class_names"] = generic_class_names(num_classes)
    if "class_names" in kwargs:
        kwargs["class_names"] = tuple(kwargs["class_names"])
        if num_classes is not None and num_classes != len(kwargs["class_names"]):
            raise ValueError(f"num_classes={num_classes} but {len(kwargs['class_names'])} class names")

    num_keypoints = kwargs.pop("num_keypoints", None)
    if num_keypoints is not None and "keypoint_names" not in kwargs and num_keypoints != config.num_keypoints:
        if not config.keypoint_on and not kwargs.get("keypoint_on"):
            raise TypeError(f"{name} has no keypoint head; num_keypoints does not apply")
        kwargs["keypoint_names"] = tuple(f"keypoint_{i}" for i in range(num_keypoints))
        kwargs.setdefault("keypoint_skeleton", ())
        kwargs.setdefault("keypoint_flip_map", ())

    for key in ("min_size", "image_mean", "image_std", "bbox_reg_weights", "keypoint_names"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    if kwargs.get("bbox_reg_weights", 0) is None:
        kwargs.pop("bbox_reg_weights")
    if kwargs.get("trainable_backbone_layers", 0) is None:
        kwargs.pop("trainable_backbone_layers")
    unknown = set(kwargs) - _CONFIG_FIELDS
    if unknown:
        raise TypeError(f"unexpected keyword arguments for {name}: {', '.join(sorted(unknown))}")
    return config.replace(**kwargs)
