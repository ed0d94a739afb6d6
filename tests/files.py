"""Files the tests make: images, JSON, labelme files as labelme 5 writes them, and weights files
named as torchvision publishes them."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model.weights.registry import WeightsInfo


def write_images(folder: Path, sizes: list[tuple[int, int]], seed: int = 0) -> list[str]:
    """Writes PNGs ``0.png, 1.png, ...`` of the given ``(width, height)``; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for index, (width, height) in enumerate(sizes):
        name = f"{index}.png"
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(folder / name)
        names.append(name)
    return names


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def labelme_shape(
    label: str, points: list, shape_type: str = "polygon", group_id: int | None = None, mask: np.ndarray | None = None
) -> dict:
    encoded = None
    if mask is not None:
        buffer = io.BytesIO()
        Image.fromarray(mask.astype(np.uint8)).save(buffer, format="PNG")
        encoded = base64.b64encode(buffer.getvalue()).decode("utf-8")
    return {
        "label": label,
        "points": points,
        "group_id": group_id,
        "description": "",
        "shape_type": shape_type,
        "flags": {},
        "mask": encoded,
    }


def write_labelme(json_path: Path, image_path: Path, shapes: list[dict], size: tuple[int, int]) -> None:
    data = {
        "version": "5.5.0",
        "flags": {},
        "shapes": shapes,
        "imagePath": os.path.relpath(image_path, json_path.parent),
        "imageData": None,
        "imageHeight": size[1],
        "imageWidth": size[0],
    }
    json_path.write_text(json.dumps(data, ensure_ascii=False, indent=2))


def published_like(state_dict: dict[str, torch.Tensor], folder: Path, stem: str) -> tuple[Path, str]:
    """A torch.save file named like torchvision's (``stem-<8 hex of sha256>.pth``)."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / "staging.pth"
    torch.save(state_dict, staging)
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()
    path = folder / f"{stem}-{digest[:8]}.pth"
    staging.rename(path)
    return path, digest


def unreachable_url(filename: str) -> str:
    """A URL on a port nobody listens on: the connection is refused, as offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/models/{filename}"


def few_megabytes_published(folder: Path) -> tuple[WeightsInfo, Path]:
    """A 4 MB weights file named like torchvision's and a registry entry whose URL is file://."""
    source, digest = published_like({"weight": torch.randn(1 << 20)}, folder, "few_megabytes")
    info = WeightsInfo(
        name="few_megabytes.TEST",
        architecture="maskrcnn_resnet50_fpn",
        url=source.as_uri(),
        sha256_prefix=digest[:8],
        categories=("__background__", "thing"),
    )
    return info, source


REPOSITORY = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def reachable_by_other_users() -> Iterator[None]:
    """The checkout and the interpreter reachable by another user (``nobody``) while the block runs:
    a clean clone may sit in a folder only its owner can enter (``mktemp -d`` makes them 0700), and
    the read-only tests run the program as a user that file permissions apply to. Each folder on
    the way that others cannot enter gets their execute bit, and its mode back afterwards."""
    changed: list[tuple[Path, int]] = []
    for start in (REPOSITORY, Path(sys.executable).parent, Path(sys.prefix)):
        for folder in [start, *start.parents]:
            mode = folder.stat().st_mode
            if not mode & stat.S_IXOTH and os.geteuid() == 0:
                folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
                changed.append((folder, stat.S_IMODE(mode)))
    try:
        yield
    finally:
        for folder, mode in reversed(changed):
            folder.chmod(mode)
