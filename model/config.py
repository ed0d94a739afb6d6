"""The one configuration record of the detector: categories, keypoint schema, architecture, sizes
and thresholds. Defaults are torchvision's for ``maskrcnn_resnet50_fpn``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

# torchvision's COCO label space: 91 indices, 0 is the background, "N/A" marks ids unused by COCO.
COCO_CATEGORY_NAMES: tuple[str, ...] = (
    "__background__",
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "N/A",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "N/A",
    "backpack",
    "umbrella",
    "N/A",
    "N/A",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "N/A",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "N/A",
    "dining table",
    "N/A",
    "N/A",
    "toilet",
    "N/A",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "N/A",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)

COCO_PERSON_CATEGORY_NAMES: tuple[str, ...] = ("no person", "person")

COCO_PERSON_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

# COCO's person skeleton as 0-based keypoint index pairs (the COCO JSON file stores them 1-based).
COCO_PERSON_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13),
    (13, 11),
    (16, 14),
    (14, 12),
    (11, 12),
    (5, 11),
    (6, 12),
    (5, 6),
    (5, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (1, 2),
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
)


def skeleton_from_coco(pairs: Iterable[Sequence[int]]) -> tuple[tuple[int, int], ...]:
    """COCO's keypoint pairs (1-based, as COCO files and the project store hold them) as the
    0-based pairs ``ModelConfig`` holds. This and ``skeleton_to_coco`` are the only places where
    the index base changes."""
    return tuple((int(a) - 1, int(b) - 1) for a, b in pairs)


def skeleton_to_coco(pairs: Iterable[Sequence[int]]) -> tuple[tuple[int, int], ...]:
    """A model's 0-based keypoint pairs as COCO files and the project store hold them (1-based)."""
    return tuple((int(a) + 1, int(b) + 1) for a, b in pairs)


COCO_PERSON_FLIP_MAP: tuple[tuple[str, str], ...] = (
    ("left_eye", "right_eye"),
    ("left_ear", "right_ear"),
    ("left_shoulder", "right_shoulder"),
    ("left_elbow", "right_elbow"),
    ("left_wrist", "right_wrist"),
    ("left_hip", "right_hip"),
    ("left_knee", "right_knee"),
    ("left_ankle", "right_ankle"),
)


@dataclass
class ModelConfig:
    """Everything that shapes a Mask R-CNN here, in one flat record.

    ``class_names[0]`` is the background; a model has ``len(class_names)`` classifier outputs.
    ``variant`` picks the head design: ``"v1"`` is the paper's (one RPN conv, two-FC box head,
    no normalisation in FPN and heads); ``"v2"`` is torchvision's improved recipe (BatchNorm in
    FPN and heads, two RPN convs, four convs + one FC box head).
    Sizes are pixels; ``min_size`` is the shorter side at inference (a tuple is the training
    multi-scale set; inference uses its last entry, as torchvision does).
    """

    class_names: tuple[str, ...] = COCO_CATEGORY_NAMES
    keypoint_names: tuple[str, ...] = ()
    keypoint_skeleton: tuple[tuple[int, int], ...] = ()
    keypoint_flip_map: tuple[tuple[str, str], ...] = ()

    backbone_depth: Literal[18, 34, 50, 101] = 50
    variant: Literal["v1", "v2"] = "v1"
    mask_on: bool = True
    # Keypoint heads give keypoints to every foreground class (torchvision's convention).
    keypoint_on: bool = False
    # FrozenBatchNorm epsilon of the backbone: torchvision's v1 COCO files were trained with 0.
    frozen_bn_eps: float = 1e-5
    # Normalisation of the ResNet body: "frozen_bn" (fixed statistics, for pretrained weights), "gn"
    # (GroupNorm, trained; for training from random init, independent of the batch size) or "bn"
    # (BatchNorm with batch statistics, as ImageNet bodies are trained; a body trained so is used
    # frozen: its state dict is a "frozen_bn" one with step counts, ``model.weights.transfer.freeze_batch_norm``).
    backbone_norm: Literal["frozen_bn", "gn", "bn"] = "frozen_bn"
    # Normalisation after the convs of FPN, box head (v2) and mask head: None is the variant's
    # ("" for v1, "bn" for v2).
    head_norm: Literal["", "bn", "gn"] | None = None

    # widths: ResNet stem and first stage (the stages double it), FPN (also the RPN head), box head
    # representation, mask and keypoint heads
    backbone_width: int = 64
    fpn_channels: int = 256
    box_head_dim: int = 1024
    mask_head_channels: int = 256
    keypoint_head_channels: int = 512
    keypoint_head_convs: int = 8

    min_size: int | tuple[int, ...] = 800
    max_size: int = 1333
    size_divisible: int = 32
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    anchor_aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_score_thresh: float = 0.0

    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)

    trainable_backbone_layers: int = 3
    mask_threshold: float = 0.5
    # The keypoint head reads each box the model detected grown by this fraction of its width (height)
    # on every side: a heatmap covers its box only, and a detected box often ends a pixel inside the
    # object's extreme points (a shape's tip, a person's hand), which would be pulled inside. A box a
    # person draws is read as drawn. Training is unchanged (docs/decisions/0013-learning-loop.md,
    # "Keypoints at the box's edge"). 0 is torchvision's, kept for the COCO models, whose keypoints
    # this was not measured on.
    keypoint_box_margin: float = 0.0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    @property
    def norm(self) -> Literal["", "bn", "gn"]:
        """Normalisation of FPN and heads."""
        if self.head_norm is not None:
            return self.head_norm
        return "bn" if self.variant == "v2" else ""

    @property
    def test_min_size(self) -> int:
        return self.min_size[-1] if isinstance(self.min_size, tuple) else self.min_size

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, stored in our checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                continue
            if isinstance(value, list):
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
            values[key] = value
        return cls(**values)
