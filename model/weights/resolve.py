"""The one resolver of weights: a registry name, a ``WeightsInfo`` or a file becomes a verified
file, its state dict and the config of the model it was saved from, with the requested
architecture checked once. ``load_model``, ``build_model`` and training build on it;
``resolve_joined`` makes one network of a mask network and a keypoint network (fine-tuning a
combined registry entry starts there).

Where the config comes from: the registry entry (its label space and BatchNorm epsilon), else
the config our checkpoints store, else ``infer_config`` reads it off a bare state dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from model.builders import ARCHITECTURES, check_architecture, config_for
from model.config import ModelConfig
from model.detector import MaskRCNN
from model.weights.architecture import infer_config
from model.weights.download import ProgressCallback, WeightsFile, fetch
from model.weights.formats import read_weights
from model.weights.registry import WeightsInfo
from model.weights.transfer import join_keypoint_head, load_weights


@dataclass(frozen=True)
class ResolvedWeights:
    """Weights ready to load: the verified file, its state dict, and ``config``, the config of the
    model it was saved from (label space included)."""

    file: WeightsFile
    state_dict: dict[str, Tensor]
    config: ModelConfig

    @property
    def version(self) -> str:
        """Provenance for ``MaskRCNN.weights_version``: weights name (or file stem) + 8 hash digits."""
        return self.file.version

    @property
    def info(self) -> WeightsInfo | None:
        """The registry entry, for registry weights; None for a local file."""
        return self.file.info

    def config_with(self, **overrides: Any) -> ModelConfig:
        """``config`` with ``build_model`` keyword arguments applied (``num_classes``,
        ``box_score_thresh``, ...): ``config_for`` of the nearest architecture, given every field
        in which ``config`` differs from it; another label space replaces the file's names."""
        config = self.config
        if not overrides:
            return config
        name = {"v1": "maskrcnn_resnet50_fpn", "v2": "maskrcnn_resnet50_fpn_v2"}[config.variant]
        if config.keypoint_on:
            name = "keypointrcnn_resnet50_fpn"
        defaults = ARCHITECTURES[name]
        fields = {k: v for k, v in config.to_dict().items() if getattr(defaults, k) != getattr(config, k)}
        if "num_classes" in overrides or "class_names" in overrides:
            fields.pop("class_names", None)
        if "num_keypoints" in overrides or "keypoint_names" in overrides:
            for key in ("keypoint_names", "keypoint_skeleton", "keypoint_flip_map"):
                fields.pop(key, None)
        return config_for(name, **{**fields, **overrides})


def resolve_weights(
    weights: str | Path | WeightsInfo,
    architecture: str | None = None,
    *,
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
) -> ResolvedWeights:
    """Find, download once (see ``fetch``), verify and read weights.

    ``architecture``, when given, must be the weights' own: a registry file's architecture name,
    or for a local file the same network (ResNet depth, variant, FPN width, body norm; classes,
    keypoints and heads may differ, loading re-initialises or transfers those). An unknown
    architecture is refused before anything is downloaded.
    """
    if architecture is not None:
        check_architecture(architecture)
    file = fetch(weights, progress=progress, on_progress=on_progress)
    state_dict, saved_config = read_weights(file.path)
    if file.info is not None:
        if architecture is not None and architecture != file.info.architecture:
            raise ValueError(f"{file.info.name} are weights of {file.info.architecture}, not {architecture}")
        config = file.info.config()
    else:
        config = ModelConfig.from_dict(saved_config) if saved_config is not None else infer_config(state_dict)
        if architecture is not None and _network(config) != _network(ARCHITECTURES[architecture]):
            raise ValueError(f"{file.path} does not hold weights of {architecture}")
    return ResolvedWeights(file=file, state_dict=state_dict, config=config)


@dataclass(frozen=True)
class JoinedWeights:
    """A mask network and a keypoint network as one network's weights (``join_keypoint_head``):
    ``state_dict`` and ``config`` are the joined network's, ``masks`` and ``keypoints`` the two
    resolved files it was made of."""

    masks: ResolvedWeights
    keypoints: ResolvedWeights
    state_dict: dict[str, Tensor]
    config: ModelConfig
    name: str = ""

    @property
    def version(self) -> str:
        """``name@<mask hash>+<keypoint hash>`` as ``PersonPosePredictor`` names the pair; without a
        name both versions in full."""
        if not self.name:
            return f"{self.masks.version}+{self.keypoints.version}"
        hashes = (self.masks.version.rpartition("@")[2], self.keypoints.version.rpartition("@")[2])
        return f"{self.name}@{'+'.join(hashes)}"


def resolve_joined(
    masks: str | Path | WeightsInfo,
    keypoints: str | Path | WeightsInfo,
    *,
    name: str = "",
    architecture: str | None = None,
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
) -> JoinedWeights:
    """Resolve both networks (as ``resolve_weights``; ``architecture`` is the mask network's) and
    join them: everything of ``masks``, the keypoint head and predictor of ``keypoints``."""
    mask_weights = resolve_weights(masks, architecture, progress=progress, on_progress=on_progress)
    keypoint_weights = resolve_weights(keypoints, progress=progress, on_progress=on_progress)
    state_dict, config = join_keypoint_head(
        mask_weights.state_dict, mask_weights.config, keypoint_weights.state_dict, keypoint_weights.config
    )
    return JoinedWeights(mask_weights, keypoint_weights, state_dict, config, name)


def _network(config: ModelConfig) -> tuple[Any, ...]:
    """What weights of one architecture share whatever their label space and heads."""
    return (config.backbone_depth, config.variant, config.fpn_channels, config.backbone_norm)


def load_model(
    weights: str | Path | WeightsInfo,
    *,
    architecture: str | None = None,
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
    **overrides: Any,
) -> MaskRCNN:
    """A model with its weights: from the registry (downloaded once) or a local file.

    ``progress`` and ``on_progress`` report a download as in ``download``. ``overrides`` are
    ``build_model`` keyword arguments (``num_classes``, ``box_score_thresh``, ...); with another
    number of classes or keypoints only the predictor layers start fresh. The model's
    ``weights_version`` names the file for provenance.
    """
    resolved = resolve_weights(weights, architecture, progress=progress, on_progress=on_progress)
    model = MaskRCNN(resolved.config_with(**overrides))
    load_weights(model, resolved.state_dict)
    model.weights_version = resolved.version
    return model.eval()


def build_model(name: str, weights: str | Path | WeightsInfo | None = None, **kwargs: Any) -> MaskRCNN:
    """Build ``maskrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn_v2``, ``keypointrcnn_resnet50_fpn``
    or our ``maskrcnn_resnet18_fpn_small``, with torchvision's keyword arguments (``num_classes``,
    ``num_keypoints``, ``min_size``, ``max_size``, ``box_score_thresh``, ``rpn_*``, ...).

    The module loads the state dict of torchvision's model of the same name (``strict=True``).
    ``weights`` is a registry name (``"maskrcnn_resnet50_fpn.COCO_V1"``) or a local file; with a
    different ``num_classes``/``num_keypoints`` only the predictor layers start fresh. The module
    is returned in eval mode.
    """
    if weights is None:
        return MaskRCNN(config_for(name, **kwargs)).eval()
    return load_model(weights, architecture=name, **kwargs)
