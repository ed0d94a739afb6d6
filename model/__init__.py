"""Mask R-CNN in PyTorch, Qt-free: backbone + FPN, RPN, box/mask/keypoint heads, weights,
Predictor, training and evaluation.

Submodules that need no torch (``model.images``) stay cheap to import: public names that pull in
torch are resolved lazily on first access (PEP 562), so ``python main.py info`` starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule that defines it
_LAZY: dict[str, str] = {
    "ModelConfig": "config",
    "MaskRCNN": "detector",
    "build_model": "weights.resolve",
    "Instances": "structures",
    "Predictor": "predictor",
    "PredictionCancelled": "predictor",
    "REGISTRY": "weights.registry",
    "WeightsInfo": "weights.registry",
    "WeightsUnavailableError": "weights.download",
    "WeightsHashError": "weights.download",
    "load_model": "weights.resolve",
    "save_weights": "weights.formats",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"model.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'model' has no attribute {name!r}")
