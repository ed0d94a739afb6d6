"""The registry of published weights: torchvision's COCO detectors and the ImageNet ResNet that
training can start its backbone from.

As torchvision's weights enums do, an entry is data only: where the file is (URL, hash prefix),
what it was trained for (label space, keypoint schema, BatchNorm epsilon) and how well it does
(COCO val2017 AP, size). Fetching a file is ``model.weights.download``'s job; the model it
loads into comes from ``WeightsInfo.config``. ``COMBINED`` names pairs of those files that run
together as one Predictor (``model.person_pose``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from model.builders import config_for
from model.config import (
    COCO_CATEGORY_NAMES,
    COCO_PERSON_CATEGORY_NAMES,
    COCO_PERSON_FLIP_MAP,
    COCO_PERSON_KEYPOINT_NAMES,
    COCO_PERSON_SKELETON,
    ModelConfig,
)
from resources import bundled_model


@dataclass(frozen=True)
class WeightsInfo:
    """One published weights file.

    ``sha256_prefix`` is the hash prefix that torchvision puts in the file name (torch.hub's
    convention: ``name-<first hex digits of sha256>.pth``).
    """

    name: str
    architecture: str
    url: str
    sha256_prefix: str
    categories: tuple[str, ...]
    keypoint_names: tuple[str, ...] = ()
    keypoint_skeleton: tuple[tuple[int, int], ...] = ()
    keypoint_flip_map: tuple[tuple[str, str], ...] = ()
    # torchvision's v1 files were trained with FrozenBatchNorm eps = 0 (its builders overwrite it)
    frozen_bn_eps: float = 1e-5
    metrics: dict[str, float] = field(default_factory=dict)  # COCO val2017 AP
    num_params: int = 0
    file_size_mb: float = 0.0

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def config(self, **overrides: Any) -> ModelConfig:
        """The architecture's config with this file's label space and BatchNorm epsilon."""
        schema: dict[str, Any] = {"class_names": self.categories, "frozen_bn_eps": self.frozen_bn_eps}
        if self.keypoint_names:
            schema.update(
                keypoint_names=self.keypoint_names,
                keypoint_skeleton=self.keypoint_skeleton,
                keypoint_flip_map=self.keypoint_flip_map,
            )
        if "num_classes" in overrides or "class_names" in overrides:
            schema.pop("class_names")
        if "num_keypoints" in overrides or "keypoint_names" in overrides:
            for key in ("keypoint_names", "keypoint_skeleton", "keypoint_flip_map"):
                schema.pop(key, None)
        return config_for(self.architecture, **{**schema, **overrides})


REGISTRY: dict[str, WeightsInfo] = {
    info.name: info
    for info in (
        WeightsInfo(
            name="maskrcnn_resnet50_fpn.COCO_V1",
            architecture="maskrcnn_resnet50_fpn",
            url="https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth",
            sha256_prefix="bf2d0c1e",
            categories=COCO_CATEGORY_NAMES,
            frozen_bn_eps=0.0,
            metrics={"box_map": 37.9, "mask_map": 34.6},
            num_params=44_401_393,
            file_size_mb=169.84,
        ),
        WeightsInfo(
            name="maskrcnn_resnet50_fpn_v2.COCO_V1",
            architecture="maskrcnn_resnet50_fpn_v2",
            url="https://download.pytorch.org/models/maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth",
            sha256_prefix="73cbd019",
            categories=COCO_CATEGORY_NAMES,
            metrics={"box_map": 47.4, "mask_map": 41.8},
            num_params=46_359_409,
            file_size_mb=177.219,
        ),
        WeightsInfo(
            name="keypointrcnn_resnet50_fpn.COCO_V1",
            architecture="keypointrcnn_resnet50_fpn",
            url="https://download.pytorch.org/models/keypointrcnn_resnet50_fpn_coco-fc266e95.pth",
            sha256_prefix="fc266e95",
            categories=COCO_PERSON_CATEGORY_NAMES,
            keypoint_names=COCO_PERSON_KEYPOINT_NAMES,
            keypoint_skeleton=COCO_PERSON_SKELETON,
            keypoint_flip_map=COCO_PERSON_FLIP_MAP,
            frozen_bn_eps=0.0,
            metrics={"box_map": 54.6, "kp_map": 65.0},
            num_params=59_137_258,
            file_size_mb=226.054,
        ),
    )
}
# architecture name -> its registry weights (torchvision's ``DEFAULT``)
DEFAULT_WEIGHTS: dict[str, str] = {info.architecture: info.name for info in REGISTRY.values()}


@dataclass(frozen=True)
class CombinedWeightsInfo:
    """Two published files run as one Predictor (``model.person_pose``): boxes, classes and masks
    from the ``masks`` network, and for each ``person`` the keypoints of the ``keypoints`` network.
    torchvision publishes no network that does both; each file downloads on its own (``files``)."""

    name: str
    masks: WeightsInfo
    keypoints: WeightsInfo
    person: str = "person"  # the class of ``masks`` that ``keypoints`` detects

    @property
    def files(self) -> tuple[WeightsInfo, WeightsInfo]:
        return (self.masks, self.keypoints)

    @property
    def categories(self) -> tuple[str, ...]:
        return self.masks.categories

    @property
    def keypoint_names(self) -> tuple[str, ...]:
        return self.keypoints.keypoint_names

    @property
    def file_size_mb(self) -> float:
        return self.masks.file_size_mb + self.keypoints.file_size_mb


# The v2 Mask R-CNN (41.8 mask AP against v1's 34.6) for the 80 classes' masks; torchvision's only
# Keypoint R-CNN for the persons' 17 keypoints.
COMBINED: dict[str, CombinedWeightsInfo] = {
    info.name: info
    for info in (
        CombinedWeightsInfo(
            name="masks_and_keypoints_resnet50_fpn.COCO_V1",
            masks=REGISTRY["maskrcnn_resnet50_fpn_v2.COCO_V1"],
            keypoints=REGISTRY["keypointrcnn_resnet50_fpn.COCO_V1"],
        ),
    )
}

# ImageNet classification weights of torchvision's ResNets: a starting point for training the
# detector's backbone (``model.weights.transfer.load_backbone``), not a detector; their FPN and
# heads start fresh.
BACKBONES: dict[str, WeightsInfo] = {
    info.name: info
    for info in (
        WeightsInfo(
            name="resnet50.IMAGENET1K_V1",
            architecture="maskrcnn_resnet50_fpn",
            url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
            sha256_prefix="0676ba61",
            categories=(),
            num_params=25_557_032,
            file_size_mb=97.781,
        ),
    )
}


def lookup(name: str) -> WeightsInfo:
    """A registry entry by its name, or the default weights of an architecture name."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name in DEFAULT_WEIGHTS:
        return REGISTRY[DEFAULT_WEIGHTS[name]]
    raise KeyError(f"unknown weights {name!r}; known: {', '.join(sorted(REGISTRY))}")


def registry_files(name: str) -> tuple[WeightsInfo, ...]:
    """The published files a registry name stands for: a combined entry's two, a file entry's one
    (an architecture name: its default weights), none for a name the registry does not know."""
    if name in COMBINED:
        return COMBINED[name].files
    if name in REGISTRY or name in DEFAULT_WEIGHTS:
        return (lookup(name),)
    return ()


def default_weights() -> str:
    """The weights proposals, training and evaluation use when none are named: the bundled demo
    model when this installation has it, else torchvision's COCO Mask R-CNN."""
    demo = bundled_model()
    return str(demo) if demo is not None else "maskrcnn_resnet50_fpn.COCO_V1"
