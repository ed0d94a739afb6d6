"""What a model knows, in a line, read without loading its weights (model.weights.summary)."""

from __future__ import annotations

import torch

from model import save_weights
from model.weights.summary import what_it_knows
from resources import bundled_model
from tests.model.small import tiny_model


def test_the_registry_the_demo_and_a_saved_file_say_what_they_know(tmp_path) -> None:
    assert what_it_knows("maskrcnn_resnet50_fpn.COCO_V1") == (
        "COCO; knows 80 classes: person, bicycle, car, motorcycle, airplane, bus, …"
    )
    assert what_it_knows("keypointrcnn_resnet50_fpn.COCO_V1") == "COCO; knows 1 class: person; 17 keypoints each"
    assert what_it_knows(str(bundled_model())).startswith("trained on synthetic shapes only; knows 4 classes")
    model = tiny_model(class_names=("__background__", "cat", "dog"))
    saved = save_weights(model, tmp_path / "pets.safetensors", dtype=torch.float16)
    assert what_it_knows(str(saved)) == "knows 2 classes: cat, dog; 5 keypoints each"  # the small architecture's
    assert what_it_knows(str(tmp_path / "missing.safetensors")) == ""
