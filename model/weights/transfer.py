"""Weights into a model whose label space differs from the file's (fine-tuning starts there):
another number of classes or keypoints (``load_weights``), the classes and keypoints the two
share carried over by name (``load_transferred``), only an ImageNet ResNet body
(``load_backbone``), or a mask network and a keypoint network's keypoint head joined into one
network (``join_keypoint_head``); and a body trained with batch statistics made the frozen one it
is used as (``freeze_batch_norm``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from model.config import ModelConfig
from model.detector import MaskRCNN
from model.weights.legacy import upgrade_legacy_keys

# predictor modules: the only layers whose shapes depend on the class / keypoint count
_PREDICTORS = ("roi_heads.box_predictor", "roi_heads.mask_predictor", "roi_heads.keypoint_predictor")


def load_weights(model: MaskRCNN, state_dict: dict[str, Tensor]) -> list[str]:
    """Load a state dict; predictor layers whose shapes differ (another number of classes or
    keypoints) are re-initialised instead. Anything else that does not fit is an error.

    Returns:
        The keys of the state dict that were not loaded because they were re-initialised.
    """
    state_dict = upgrade_legacy_keys(state_dict)
    own = model.state_dict()
    skipped: list[str] = []
    for key, value in state_dict.items():
        if key in own and own[key].shape != value.shape:
            predictor = next((p for p in _PREDICTORS if key.startswith(p + ".")), None)
            if predictor is None:
                raise ValueError(f"{key}: shape {tuple(value.shape)} in the file, {tuple(own[key].shape)} in the model")
            skipped.append(key)
    for predictor in {p for p in _PREDICTORS for k in skipped if k.startswith(p + ".")}:
        module: nn.Module = model.get_submodule(predictor)
        module.reset_parameters()  # type: ignore[operator]
    result = model.load_state_dict({k: v for k, v in state_dict.items() if k not in skipped}, strict=False)
    missing = set(result.missing_keys) - set(skipped)
    if missing or result.unexpected_keys:
        raise ValueError(
            "weights do not fit the model: "
            f"missing {sorted(missing)[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {sorted(result.unexpected_keys)[:8]}{'...' if len(result.unexpected_keys) > 8 else ''}"
        )
    return skipped


def freeze_batch_norm(model: MaskRCNN) -> MaskRCNN:
    """The same network with its ResNet body's BatchNorm (``backbone_norm="bn"``, trained with batch
    statistics) as FrozenBatchNorm with the running statistics: what a body trained so is used as,
    and the layout of torchvision's files (the step counts are dropped). Exact in inference."""
    if model.config.backbone_norm != "bn":
        raise ValueError(f"the body is normalised by {model.config.backbone_norm!r}, not trained batch norm")
    frozen = MaskRCNN(model.config.replace(backbone_norm="frozen_bn", frozen_bn_eps=1e-5))  # BatchNorm2d's eps
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(".num_batches_tracked")}
    frozen.load_state_dict(state)
    frozen.weights_version = model.weights_version
    return frozen.eval()


_HEADS = (
    "roi_heads.mask_head.",
    "roi_heads.mask_predictor.",
    "roi_heads.keypoint_head.",
    "roi_heads.keypoint_predictor.",
)
# predictor tensors indexed by class (dim, rows per class) or by keypoint (dim)
_CLASS_ROWS = {
    "roi_heads.box_predictor.cls_score.weight": 1,
    "roi_heads.box_predictor.cls_score.bias": 1,
    "roi_heads.box_predictor.bbox_pred.weight": 4,
    "roi_heads.box_predictor.bbox_pred.bias": 4,
    "roi_heads.mask_predictor.mask_fcn_logits.weight": 1,
    "roi_heads.mask_predictor.mask_fcn_logits.bias": 1,
}
_KEYPOINT_DIM = {
    "roi_heads.keypoint_predictor.kps_score_lowres.weight": 1,
    "roi_heads.keypoint_predictor.kps_score_lowres.bias": 0,
}


@dataclass
class TransferReport:
    """What ``load_transferred`` carried over from the source weights and what starts fresh."""

    kept_classes: list[str] = field(default_factory=list)
    new_classes: list[str] = field(default_factory=list)
    kept_keypoints: list[str] = field(default_factory=list)
    new_keypoints: list[str] = field(default_factory=list)
    new_heads: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        if self.new_classes:
            kept = ", ".join(self.kept_classes) or "none"
            out.append(f"classes starting fresh: {', '.join(self.new_classes)} (carried over: {kept})")
        if self.new_keypoints:
            out.append(f"keypoints starting fresh: {', '.join(self.new_keypoints)}")
        if self.new_heads:
            out.append(f"heads starting fresh: {', '.join(self.new_heads)}")
        return out


def _remap(own: Tensor, source: Tensor, pairs: list[tuple[int, int]], dim: int, rows: int) -> Tensor:
    """``own`` with the slices ``target`` taken from ``source``'s slices ``origin`` along ``dim``
    (``rows`` consecutive entries per class)."""
    out = own.clone()
    for target, origin in pairs:
        out.narrow(dim, target * rows, rows).copy_(source.narrow(dim, origin * rows, rows))
    return out


def load_backbone(model: MaskRCNN, state_dict: dict[str, Tensor]) -> None:
    """A ResNet classifier's weights (torchvision's layout: ``conv1.weight``, ``layer1.0.bn1.running_mean``,
    ... ``fc.weight``) into the model's ResNet body; the classifier is dropped, FPN and heads keep
    their initialisation. The body must match exactly (depth, width)."""
    body = {key: value for key, value in state_dict.items() if not key.startswith("fc.")}
    try:
        model.backbone.body.load_state_dict(body, strict=True)
    except RuntimeError as error:
        raise ValueError(f"these are not weights of the model's ResNet body: {error}") from None


# the keypoint network's parts that a joined network takes (the rest is the mask network's)
_KEYPOINT_PARTS = ("roi_heads.keypoint_head.", "roi_heads.keypoint_predictor.")


def join_keypoint_head(
    masks: dict[str, Tensor], masks_config: ModelConfig, keypoints: dict[str, Tensor], keypoints_config: ModelConfig
) -> tuple[dict[str, Tensor], ModelConfig]:
    """One network from two: the state dict and config of a Mask R-CNN with the backbone, RPN,
    box and mask heads and classes of ``masks`` and the keypoint head, predictor and keypoint
    schema of ``keypoints`` (a Keypoint R-CNN, e.g. torchvision's COCO pair).

    The keypoint head was trained on the keypoint network's own FPN features, which the mask
    network's backbone does not reproduce: the joined network is a starting point for
    fine-tuning (``load_transferred`` into the data set's label space), not a model to use as it
    is (``model.person_pose`` runs the two networks apart for that). The keypoint head reads the
    FPN's channels, so both networks must have the same FPN width.
    """
    if not masks_config.mask_on:
        raise ValueError("the mask network has no mask head")
    if not keypoints_config.keypoint_on:
        raise ValueError("the keypoint network has no keypoint head")
    if masks_config.fpn_channels != keypoints_config.fpn_channels:
        raise ValueError(
            f"the keypoint head reads {keypoints_config.fpn_channels} FPN channels, "
            f"the mask network's FPN gives {masks_config.fpn_channels}"
        )
    masks, keypoints = upgrade_legacy_keys(masks), upgrade_legacy_keys(keypoints)
    joined = {key: value for key, value in masks.items() if not key.startswith(_KEYPOINT_PARTS)}
    joined.update({key: value for key, value in keypoints.items() if key.startswith(_KEYPOINT_PARTS)})
    config = masks_config.replace(
        keypoint_on=True,
        keypoint_names=keypoints_config.keypoint_names,
        keypoint_skeleton=keypoints_config.keypoint_skeleton,
        keypoint_flip_map=keypoints_config.keypoint_flip_map,
        keypoint_head_channels=keypoints_config.keypoint_head_channels,
        keypoint_head_convs=keypoints_config.keypoint_head_convs,
    )
    return joined, config


def load_transferred(model: MaskRCNN, state_dict: dict[str, Tensor], source: ModelConfig) -> TransferReport:
    """Load weights saved from a model of config ``source`` into ``model``, whose classes,
    keypoints or heads may differ: predictor rows of a class (or keypoint) the two share by name
    are carried over, those of new ones keep the model's initialisation; heads the source lacks
    start fresh, heads the model lacks are ignored. The rest must fit exactly.
    """
    target = model.config
    state = upgrade_legacy_keys(state_dict)
    own = model.state_dict()
    report = TransferReport()
    source_classes = {name: i for i, name in reversed(list(enumerate(source.class_names)))}
    class_pairs = [(0, 0)]
    for j, name in enumerate(target.class_names[1:], start=1):
        if name in source_classes and source_classes[name] > 0:
            class_pairs.append((j, source_classes[name]))
            report.kept_classes.append(name)
        else:
            report.new_classes.append(name)
    source_keypoints = {name: k for k, name in enumerate(source.keypoint_names)} if source.keypoint_on else {}
    keypoint_pairs = []
    if target.keypoint_on:
        for k, name in enumerate(target.keypoint_names):
            if name in source_keypoints:
                keypoint_pairs.append((k, source_keypoints[name]))
                report.kept_keypoints.append(name)
            else:
                report.new_keypoints.append(name)

    for head in _HEADS:
        if any(k.startswith(head) for k in own) and not any(k.startswith(head) for k in state):
            report.new_heads.append(head[len("roi_heads.") : -1])
    loaded: dict[str, Tensor] = {}
    for key, value in own.items():
        if key not in state:
            if any(key.startswith(head) for head in _HEADS):
                loaded[key] = value
                continue
            raise ValueError(f"the weights have no {key}")
        source_value = state[key]
        if key in _CLASS_ROWS:
            rows = _CLASS_ROWS[key]
            if source_value.shape[1:] != value.shape[1:]:
                raise ValueError(
                    f"{key}: shape {tuple(source_value.shape)} in the file, {tuple(value.shape)} in the model"
                )
            loaded[key] = _remap(value, source_value, class_pairs, 0, rows)
        elif key in _KEYPOINT_DIM and key.startswith("roi_heads.keypoint_predictor."):
            dim = _KEYPOINT_DIM[key]
            loaded[key] = _remap(value, source_value, keypoint_pairs, dim, 1)
        elif source_value.shape != value.shape:
            raise ValueError(f"{key}: shape {tuple(source_value.shape)} in the file, {tuple(value.shape)} in the model")
        else:
            loaded[key] = source_value
    model.load_state_dict(loaded, strict=True)
    return report
