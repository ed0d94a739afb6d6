"""Fine-tuning a combined registry entry (``masks_and_keypoints_resnet50_fpn.COCO_V1``): ``main.py
train`` starts one network, the mask network's backbone, RPN, box and mask heads with the keypoint
network's keypoint head, and writes weights a Predictor loads. Both networks have torchvision's
layouts and random weights, served from file:// URLs; the images are small (CPU)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.models.detection as tv_detection
from PIL import Image

import main
from model import Predictor
from model.config import COCO_CATEGORY_NAMES, COCO_PERSON_KEYPOINT_NAMES
from model.data import load_coco
from model.training.setup import build_training_model
from model.weights.registry import COMBINED, CombinedWeightsInfo
from tests.files import published_like, write_images, write_json
from tests.model.small import events_of

# the data set's keypoints: three of COCO's person keypoints and one the keypoint network lacks
KEYPOINTS = ["nose", "left_shoulder", "right_shoulder", "tail"]
SIZES = ["--min-size", "64", "--max-size", "96"]


@pytest.fixture(scope="module")
def combined(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict, dict]]:
    """A combined entry of a v2 Mask R-CNN and a Keypoint R-CNN with random weights, downloaded
    from file:// URLs into a hub cache of this module; its name and the two state dicts."""
    folder = tmp_path_factory.mktemp("combined")
    torch.manual_seed(0)
    states, files = [], []
    for info in COMBINED["masks_and_keypoints_resnet50_fpn.COCO_V1"].files:
        state = getattr(tv_detection, info.architecture)(weights=None, weights_backbone=None).state_dict()
        source, digest = published_like(state, folder / "server", info.filename.rpartition("-")[0])
        files.append(
            dataclasses.replace(info, name=f"{info.architecture}.TEST", url=source.as_uri(), sha256_prefix=digest[:8])
        )
        states.append(state)
    entry = CombinedWeightsInfo(name="masks_and_keypoints.TEST", masks=files[0], keypoints=files[1])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(folder / "torch"))
        patch.setitem(COMBINED, entry.name, entry)
        yield entry.name, states[0], states[1]


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 96 x 80 images, each with a person and a robot (a class COCO lacks), four keypoints."""
    folder = tmp_path_factory.mktemp("people")
    names = write_images(folder / "images", [(96, 80)] * 2)
    annotations = []
    for i, (category, x, y) in enumerate([(1, 10, 8), (2, 50, 30), (1, 40, 20), (2, 8, 40)]):
        polygon = [x, y, x + 30, y, x + 30, y + 40, x, y + 40]
        points = [x + 15, y + 4, 2, x + 5, y + 12, 2, x + 25, y + 12, 2, x + 15, y + 38, 2]
        annotations.append(
            {
                "id": i + 1,
                "image_id": i // 2 + 1,
                "category_id": category,
                "segmentation": [polygon],
                "bbox": [x, y, 30, 40],
                "area": 1200,
                "iscrowd": 0,
                "keypoints": points,
                "num_keypoints": 4,
            }
        )
    categories = [
        {"id": 1, "name": "person", "keypoints": KEYPOINTS, "skeleton": [[2, 3]]},
        {"id": 2, "name": "robot", "keypoints": KEYPOINTS, "skeleton": [[2, 3]]},
    ]
    images = [{"id": i + 1, "file_name": name, "width": 96, "height": 80} for i, name in enumerate(names)]
    return write_json(folder / "coco.json", {"images": images, "annotations": annotations, "categories": categories})


def test_training_from_a_combined_entry_starts_one_network_of_the_mask_models_parts_and_the_keypoint_head(
    combined, people
) -> None:
    name, masks, keypoints = combined
    labels = load_coco(people, people.parent / "images").labels

    model, notes = build_training_model(name, None, labels)

    config = model.config
    assert config.variant == "v2" and config.mask_on and config.keypoint_on
    assert config.class_names == ("__background__", "person", "robot")
    assert config.keypoint_names == tuple(KEYPOINTS)
    state = model.state_dict()
    mask_parts = ("backbone.", "rpn.", "roi_heads.box_head.", "roi_heads.mask_head.")
    assert all(torch.equal(state[key], masks[key]) for key in state if key.startswith(mask_parts))
    keypoint_head = [key for key in state if key.startswith("roi_heads.keypoint_head.")]
    assert len(keypoint_head) == 16  # 8 convs, weight and bias
    assert all(torch.equal(state[key], keypoints[key]) for key in keypoint_head)
    # the person's rows of the mask network's predictors, the shared keypoints' of the keypoint network's
    person = COCO_CATEGORY_NAMES.index("person")
    for key in ("roi_heads.box_predictor.cls_score.weight", "roi_heads.mask_predictor.mask_fcn_logits.weight"):
        assert torch.equal(state[key][1], masks[key][person])
    deconv = "roi_heads.keypoint_predictor.kps_score_lowres."
    for k, keypoint in enumerate(KEYPOINTS[:3]):
        source = COCO_PERSON_KEYPOINT_NAMES.index(keypoint)
        assert torch.equal(state[deconv + "weight"][:, k], keypoints[deconv + "weight"][:, source])
        assert torch.equal(state[deconv + "bias"][k], keypoints[deconv + "bias"][source])
    assert not torch.equal(state[deconv + "weight"][:, 3], keypoints[deconv + "weight"][:, 0])  # tail: fresh
    assert notes[0].startswith(f"starting from {name}@") and "maskrcnn_resnet50_fpn_v2.TEST@" in notes[0]
    assert "keypoint head of keypointrcnn_resnet50_fpn.TEST@" in notes[0]
    assert any("robot" in note for note in notes) and any("tail" in note for note in notes)


def test_main_train_from_a_combined_entry_writes_one_network_that_predicts_masks_and_keypoints(
    combined, people, tmp_path, capsys
) -> None:
    name, _, _ = combined
    run = tmp_path / "run"
    args = ["train", str(people), "--images", str(people.parent / "images"), "--out", str(run), "--weights", name]
    options = ["--iters", "2", "--batch-size", "1", "--val-fraction", "0", "--workers", "0", "--device", "cpu"]

    assert main.main([*args, *options, *SIZES, "--no-amp"]) == 0

    done = [e for e in events_of(capsys.readouterr().out) if e["event"] == "done"]
    assert done and Path(done[0]["path"]) == run / "model_final.safetensors"
    predictor = Predictor(run / "model_final.safetensors", "cpu", precision="fp32", box_score_thresh=0.0)
    assert predictor.model.config.variant == "v2" and predictor.keypoint_names == tuple(KEYPOINTS)
    image = np.array(Image.open(people.parent / "images" / "0.png").convert("RGB"))
    found = predictor.predict(image)
    assert len(found) > 0 and found.masks is not None and found.keypoints is not None
    assert found.keypoints.shape == (len(found), 4, 3) and found.masks.shape == (len(found), 80, 96)
    person = predictor.predict_in_box(image, (10, 8, 40, 48), "person")
    assert person.masks is not None and person.keypoints is not None and person.keypoints.shape == (1, 4, 3)
