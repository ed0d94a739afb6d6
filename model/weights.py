"""Weights: the registry of torchvision's published COCO files, download into torch's hub cache,
local ``.pth`` / ``.safetensors`` files, legacy key names, and loading into a model whose class
or keypoint count differs (fine-tuning starts there).

A weights file never runs code: ``.pth`` files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from model.builders import ARCHITECTURES, config_for
from model.config import (
    COCO_CATEGORY_NAMES,
    COCO_PERSON_CATEGORY_NAMES,
    COCO_PERSON_FLIP_MAP,
    COCO_PERSON_KEYPOINT_NAMES,
    COCO_PERSON_SKELETON,
    ModelConfig,
)
from model.detector import MaskRCNN
from model.files import give_ordinary_permissions


class WeightsUnavailableError(RuntimeError):
    """The weights file is neither cached nor downloadable (offline, or the URL failed)."""


class WeightsHashError(RuntimeError):
    """A file's SHA-256 does not match the registry's."""


class DownloadCancelled(Exception):
    """Raised by a download's ``on_progress`` callback to stop it; nothing is left in the cache."""


# on_progress(bytes downloaded, total bytes or None): see ``download``
ProgressCallback = Callable[[int, int | None], None]


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
DEFAULT_WEIGHTS: dict[str, str] = {info.architecture: info.name for info in REGISTRY.values()}

# ImageNet classification weights of torchvision's ResNets: a starting point for training the
# detector's backbone (``load_backbone``), not a detector; their FPN and heads start fresh.
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


# ---------------------------------------------------------------------------------------------
# files


@dataclass(frozen=True)
class WeightsFile:
    """A weights file on disk, with where it came from."""

    path: Path
    sha256: str
    info: WeightsInfo | None = None

    @property
    def version(self) -> str:
        """Short model version for provenance: weights name (or file stem) + 8 hash digits."""
        name = self.info.name if self.info is not None else self.path.stem
        return f"{name}@{self.sha256[:8]}"


def cache_dir() -> Path:
    """torch.hub's checkpoint directory (``$TORCH_HOME/hub/checkpoints``), shared with torchvision."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(weights: str | Path | WeightsInfo, *, progress: bool = True, directory: Path | None = None,
          on_progress: ProgressCallback | None = None) -> WeightsFile:
    """Resolve weights to a verified file on disk, downloading registry weights once.

    ``weights`` is a registry name, a ``WeightsInfo``, or a path to a ``.pth`` /
    ``.safetensors`` file. A registry file is looked for in ``directory`` (default: torch.hub's
    cache), downloaded there if absent, and its hash checked either way. ``progress`` shows a bar
    on stderr; ``on_progress`` is called as the bytes arrive (see ``download``); neither is used
    when the file is already there.
    """
    if isinstance(weights, str) and (weights in REGISTRY or weights in DEFAULT_WEIGHTS):
        weights = lookup(weights)
    if not isinstance(weights, WeightsInfo):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"no weights file at {path} (registry names: {', '.join(sorted(REGISTRY))})"
            )
        return WeightsFile(path=path, sha256=sha256_of(path))

    info = weights
    path = (directory or cache_dir()) / info.filename
    if not path.is_file():
        download(info.url, path, info.sha256_prefix, progress=progress, on_progress=on_progress)
    digest = sha256_of(path)
    if not digest.startswith(info.sha256_prefix):
        raise WeightsHashError(
            f"{path} has SHA-256 {digest}, expected one starting with {info.sha256_prefix} "
            f"(the file of {info.url}); delete it and try again"
        )
    return WeightsFile(path=path, sha256=digest, info=info)


def download(url: str, destination: Path, sha256_prefix: str | None = None, *, progress: bool = True,
             on_progress: ProgressCallback | None = None) -> None:
    """Download ``url`` to ``destination`` atomically: into a temporary file beside it, hash
    checked, then renamed. A failed, corrupt or cancelled download leaves nothing at
    ``destination`` and no temporary file.

    ``progress`` shows a bar on stderr. ``on_progress(done, total)`` gets the bytes written so far
    and the size the server announced (None if it did not), once before the first chunk and after
    each; raising ``DownloadCancelled`` in it stops the download between two chunks.
    """
    from tqdm.auto import tqdm

    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, partial_name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".partial")
    partial = Path(partial_name)
    try:
        digest = hashlib.sha256()
        request = urllib.request.Request(url, headers={"User-Agent": "maskrcnn-annotator"})
        try:
            response = urllib.request.urlopen(request, timeout=30)
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise WeightsUnavailableError(
                f"could not download {url} ({reason}).\n"
                f"Without network access, fetch that file on another machine and place it at:\n"
                f"    {destination}"
            ) from error
        with response, os.fdopen(fd, "wb") as out:
            fd = -1
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
            report = on_progress or (lambda done, total: None)
            done = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=destination.name, disable=not progress) as bar:  # fmt: skip
                report(done, total)
                # 256 KiB: a cancel waits for one chunk, a quarter of a second at 1 MB/s
                while chunk := _read_chunk(response, url, destination, done, 1 << 18):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
                    report(done, total)
            if total is not None and done < total:  # the server closed the connection early
                raise _broke_off(url, destination, done, "connection closed")
            out.flush()
            os.fsync(out.fileno())
        hexdigest = digest.hexdigest()
        if sha256_prefix and not hexdigest.startswith(sha256_prefix):
            raise WeightsHashError(
                f"download of {url} has SHA-256 {hexdigest}, expected one starting with {sha256_prefix}"
            )
        os.replace(partial, destination)
    finally:
        if fd != -1:
            os.close(fd)
        partial.unlink(missing_ok=True)


def _read_chunk(response: Any, url: str, destination: Path, done: int, size: int) -> bytes:
    """The next chunk of a download; a connection that breaks off is the offline error too."""
    try:
        return response.read(size)
    except (OSError, http.client.HTTPException) as error:
        raise _broke_off(url, destination, done, repr(error)) from error


def _broke_off(url: str, destination: Path, done: int, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"the download of {url} broke off after {done / 2**20:.1f} MB ({reason}).\n"
        f"Try again, or fetch that file on another machine and place it at:\n    {destination}"
    )


def read_weights(path: Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """A file's state dict and, for our own checkpoints, the ``ModelConfig`` it was saved with.

    ``.safetensors`` carry the config as JSON in their metadata; ``.pth`` files are either a bare
    state dict (torchvision's) or ``{"model": state_dict, "config": {...}}``.
    """
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            config = json.loads(metadata["config"]) if "config" in metadata else None
            return load_file(str(path)), config
        except Exception as error:  # safetensors raises its own error type for a damaged file
            raise ValueError(f"{path} is not a readable .safetensors file: {error}") from None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a pickle that needs code, or not a torch file
        raise ValueError(f"{path} is not a plain weights file that loads without running code: {error}") from error
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        return dict(data["model"]), data.get("config")
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, not a state dict")
    return dict(data), None


def save_weights(model: MaskRCNN, path: Path | str, dtype: torch.dtype | None = None) -> Path:
    """Write the model's weights and config: ``.safetensors`` (config in the metadata) or ``.pth``.

    ``dtype`` stores the floating-point tensors in that type (e.g. ``torch.float16``, half the
    size); loading casts them back to the model's.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    config = model.config.to_dict()
    partial = path.with_name(f".{path.name}.partial")
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(partial), metadata={"config": json.dumps(config)})
    else:
        torch.save({"model": state, "config": config}, partial)
    give_ordinary_permissions(partial)  # safetensors creates its file private (0600)
    os.replace(partial, path)
    return path


# ---------------------------------------------------------------------------------------------
# state dicts

# Older torchvision files name some layers differently; torchvision renames them in load hooks
# keyed on the modules' version metadata. We rename by pattern, whatever the metadata says.
_LEGACY_KEYS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^rpn\.head\.conv\.(weight|bias)$"), r"rpn.head.conv.0.0.\1"),
    (re.compile(r"^backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d+)\.(weight|bias)$"), r"backbone.fpn.\1.\2.0.\3"),
]
_LEGACY_MASK_FCN = re.compile(r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$")


def upgrade_legacy_keys(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename torchvision's legacy keys (``rpn.head.conv.weight``, ``backbone.fpn.inner_blocks.0.weight``,
    ``roi_heads.mask_head.mask_fcn1.weight``) to the current ones; other keys pass unchanged."""
    upgraded: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new_key = key
        for pattern, replacement in _LEGACY_KEYS:
            new_key = pattern.sub(replacement, new_key)
        match = _LEGACY_MASK_FCN.match(new_key)
        if match:
            new_key = f"roi_heads.mask_head.{int(match.group(1)) - 1}.0.{match.group(2)}"
        upgraded[new_key] = value
    return upgraded


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


def load_model(
    weights: str | Path | WeightsInfo, *, architecture: str | None = None, progress: bool = True,
    on_progress: ProgressCallback | None = None, **overrides: Any
) -> MaskRCNN:
    """A model with its weights: from the registry (downloaded once) or a local file.

    ``progress`` and ``on_progress`` report a download as in ``download``. ``overrides`` are
    ``build_model`` keyword arguments (``num_classes``, ``box_score_thresh``, ...). The model's
    ``weights_version`` names the file for provenance.
    """
    file = fetch(weights, progress=progress, on_progress=on_progress)
    state_dict, saved_config = read_weights(file.path)
    if file.info is not None:
        if architecture is not None and architecture != file.info.architecture:
            raise ValueError(f"{file.info.name} are weights of {file.info.architecture}, not {architecture}")
        config = file.info.config(**overrides)
    else:
        if saved_config is not None:
            base = ModelConfig.from_dict(saved_config)
        else:
            base = infer_config(state_dict)
        if architecture is not None and architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {architecture!r}")
        config = _apply_overrides(base, overrides)
    model = MaskRCNN(config)
    load_weights(model, state_dict)
    model.weights_version = file.version
    return model.eval()


def _apply_overrides(config: ModelConfig, overrides: dict[str, Any]) -> ModelConfig:
    """``build_model`` keyword arguments applied to a config read from a file."""
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


# ---------------------------------------------------------------------------------------------
# another label space (fine-tuning on a data set whose classes or keypoints differ)

_HEADS = ("roi_heads.mask_head.", "roi_heads.mask_predictor.", "roi_heads.keypoint_head.", "roi_heads.keypoint_predictor.")
# predictor tensors indexed by class (dim, rows per class) or by keypoint (dim)
_CLASS_ROWS = {
    "roi_heads.box_predictor.cls_score.weight": 1,
    "roi_heads.box_predictor.cls_score.bias": 1,
    "roi_heads.box_predictor.bbox_pred.weight": 4,
    "roi_heads.box_predictor.bbox_pred.bias": 4,
    "roi_heads.mask_predictor.mask_fcn_logits.weight": 1,
    "roi_heads.mask_predictor.mask_fcn_logits.bias": 1,
}
_KEYPOINT_DIM = {"roi_heads.keypoint_predictor.kps_score_lowres.weight": 1, "roi_heads.keypoint_predictor.kps_score_lowres.bias": 0}


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
            out.append(f"classes starting fresh: {', '.join(self.new_classes)} "
                       f"(carried over: {', '.join(self.kept_classes) or 'none'})")  # fmt: skip
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
            report.new_heads.append(head[len("roi_heads."):-1])
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
                raise ValueError(f"{key}: shape {tuple(source_value.shape)} in the file, {tuple(value.shape)} in the model")
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
