"""What a model knows, in a line for a person choosing one: its classes and keypoints, and for the
bundled demo model that it was trained on synthetic shapes only (it proposes "star 0.84" on a
face). Read from the registry entry or the file's stored config, without loading the weights."""

from __future__ import annotations

import json
from pathlib import Path

from model.weights.registry import COMBINED, REGISTRY
from resources import bundled_model

SHOWN_CLASSES = 6  # class names listed before "…"


def knows(class_names: tuple[str, ...] | list[str], keypoint_names: tuple[str, ...] | list[str] = ()) -> str:
    """ "knows 4 classes: ellipse, rectangle, triangle, star; 5 keypoints each". The first name is
    the background, and torchvision's "N/A" placeholders (ids COCO never used) are no classes."""
    names = [n for n in list(class_names)[1:] if n != "N/A"]
    listed = ", ".join(names[:SHOWN_CLASSES]) + (", …" if len(names) > SHOWN_CLASSES else "")
    text = f"knows {len(names)} class{'' if len(names) == 1 else 'es'}: {listed}"
    return text + (f"; {len(keypoint_names)} keypoints each" if keypoint_names else "")


def what_it_knows(weights: str) -> str:
    """For a registry name or a weights file: what the model knows (:func:`knows`), prefixed for the
    demo model with what it was trained on; "" where that cannot be read without loading it (a bare
    torchvision state dict, an unreadable file)."""
    if weights in REGISTRY:
        info = REGISTRY[weights]
        return f"COCO; {knows(info.categories, info.keypoint_names)}"
    if weights in COMBINED:
        pair = COMBINED[weights]
        return f"COCO; {knows(pair.categories)}; {len(pair.keypoint_names)} keypoints for each {pair.person}"
    path = Path(weights)
    config = _stored_config(path)
    if config is None:
        return ""
    text = knows(config.get("class_names", ()), config.get("keypoint_names", ()))
    demo = bundled_model()
    if demo is not None and path.resolve() == demo.resolve():
        return f"trained on synthetic shapes only; {text}"
    return text


def _stored_config(path: Path) -> dict | None:
    """The config a ``.safetensors`` file keeps in its metadata (the header only is read)."""
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return json.loads(metadata["config"]) if "config" in metadata else None
    except Exception:  # a damaged file says so when it is loaded; here it just has no summary
        return None
