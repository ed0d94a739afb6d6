"""Weights file formats: ``.pth`` (a bare state dict, torchvision's, or ours with its config) and
``.safetensors`` (the config as JSON in the metadata).

A weights file never runs code: ``.pth`` files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from model.detector import MaskRCNN
from model.files import flush_to_disk, give_ordinary_permissions


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
    flush_to_disk(partial)
    os.replace(partial, path)
    return path
