"""Small models and data for the model tests: the small architecture at 128 pixels, COCO files of
a few squares, and the training events read back."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from model.builders import config_for
from model.detector import MaskRCNN
from tests.files import write_images, write_json

# the small architecture at the tests' image size
TINY = {"min_size": 128, "max_size": 128}


def tiny_model(seed: int = 0, **changes) -> MaskRCNN:
    torch.manual_seed(seed)
    return MaskRCNN(config_for("maskrcnn_resnet18_fpn_small", trainable_backbone_layers=5, **TINY, **changes))


def events_of(stream: io.StringIO | str) -> list[dict]:
    text = stream.getvalue() if isinstance(stream, io.StringIO) else stream
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def square_coco(tmp_path: Path, annotations: list[dict], keypoints: list[str] | None = None, images: int = 2) -> Path:
    names = write_images(tmp_path / "images", [(40, 30)] * images)
    categories = [{"id": 7, "name": "thing"}, {"id": 3, "name": "other"}]
    if keypoints:
        for category in categories:
            category["keypoints"] = keypoints
            category["skeleton"] = [[1, 2]]
    return write_json(
        tmp_path / "coco.json",
        {
            "images": [{"id": i + 1, "file_name": name, "width": 40, "height": 30} for i, name in enumerate(names)],
            "annotations": annotations,
            "categories": categories,
        },
    )
