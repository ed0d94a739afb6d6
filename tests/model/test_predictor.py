"""Predictor: the inference API of the GUI and the CLI (random weights, small inputs, CPU; the
CUDA test runs only where there is a GPU)."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model import Instances, PredictionCancelled, Predictor, build_model, save_weights
from model.devices import choose_device
from model.images import read_image
from model.synthetic import make_sample
from resources import DEMO_DIR, DEMO_MODEL

DISPLAY_THRESHOLD = 0.5  # the app's default score threshold
SMALL = {"min_size": 224, "max_size": 320, "box_score_thresh": 0.0, "box_detections_per_img": 10}


@pytest.fixture(scope="module")
def mask_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("maskrcnn_resnet50_fpn", **SMALL)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return make_sample(np.random.default_rng(0), 240, 320, min_shapes=3, max_shapes=5)[0]


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else 1.0


def count_backbone_calls(predictor: Predictor) -> list[int]:
    calls = [0]
    backbone = predictor.model.backbone
    original = backbone.forward

    def counted(x: torch.Tensor) -> list[torch.Tensor]:
        calls[0] += 1
        return original(x)

    backbone.forward = counted  # type: ignore[method-assign]
    return calls


def test_predict_gives_instances_at_image_resolution(mask_model, image) -> None:
    predictor = Predictor(mask_model, device="cpu")
    found = predictor.predict(image)

    assert isinstance(found, Instances) and len(found) == 10
    assert found.image_size == (240, 320)
    assert found.masks is not None and found.masks.dtype == torch.bool and found.masks.shape == (10, 240, 320)
    assert found.boxes.shape == (10, 4)
    assert (found.boxes[:, 0::2] >= 0).all() and (found.boxes[:, 0::2] <= 320).all()
    assert (found.boxes[:, 1::2] >= 0).all() and (found.boxes[:, 1::2] <= 240).all()
    assert found.label_names == [mask_model.config.class_names[i] for i in found.labels.tolist()]
    assert (found.scores[:-1] >= found.scores[1:]).all()
    assert found.model_version == predictor.model_version == "unversioned"
    arrays = found.to_numpy()
    assert arrays["masks"].shape == (10, 240, 320) and arrays["boxes"].dtype == np.float32
    assert len(found[found.scores >= found.scores[2]]) == 3


def test_predict_equals_the_model_forward_thresholded(mask_model, image) -> None:
    # float32 asked for: "auto" is bfloat16 on a CPU that has it (tests/model/test_precision.py)
    predictor = Predictor(mask_model, device="cpu", precision="fp32", channels_last=False)
    found = predictor.predict(image)
    with torch.inference_mode():
        expected = mask_model([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]
    assert torch.equal(found.labels, expected["labels"])
    torch.testing.assert_close(found.boxes, expected["boxes"])
    assert torch.equal(found.masks, expected["masks"][:, 0] >= 0.5)


def test_channels_last_gives_the_same_detections(mask_model, image) -> None:
    plain = Predictor(mask_model, device="cpu", precision="fp32", channels_last=False).predict(image)
    nhwc = Predictor(
        build_model("maskrcnn_resnet50_fpn", **SMALL).eval(), device="cpu", precision="fp32", channels_last=True
    )
    nhwc.model.load_state_dict(mask_model.state_dict())
    found = nhwc.predict(image)
    assert torch.equal(found.labels, plain.labels)
    torch.testing.assert_close(found.boxes, plain.boxes, rtol=0, atol=1e-2)
    assert min(mask_iou(a, b) for a, b in zip(found.masks, plain.masks)) > 0.98


def test_predict_in_box_runs_only_the_heads_on_cached_features(mask_model, image) -> None:
    predictor = Predictor(build_model("maskrcnn_resnet50_fpn", **SMALL), device="cpu")
    predictor.model.load_state_dict(mask_model.state_dict())
    calls = count_backbone_calls(predictor)

    predictor.predict(image)
    drawn = predictor.predict_in_box(image, (40.0, 30.0, 200.0, 180.0))
    assert calls[0] == 1
    assert len(drawn) == 1 and drawn.masks is not None and drawn.masks.shape == (1, 240, 320)
    assert drawn.boxes.tolist() == [[40.0, 30.0, 200.0, 180.0]]
    assert drawn.label_names[0] != mask_model.config.class_names[0] and 0 < drawn.scores[0] <= 1
    outside = drawn.masks[0].clone()
    outside[30 - 7 : 180 + 7, 40 - 7 : 200 + 7] = False  # the 28-cell mask is padded by one cell
    assert not outside.any(), "the pasted mask stays inside its box"

    predictor.predict_in_box(image[::-1].copy(), (10.0, 10.0, 100.0, 100.0))  # another image
    assert calls[0] == 2


def test_a_prepared_image_answers_its_first_box_with_the_heads_alone(mask_model, image) -> None:
    predictor = Predictor(mask_model, device="cpu")
    calls = count_backbone_calls(predictor)
    predictor.prepare(image)  # what the app does as the image opens
    assert calls[0] == 1
    drawn = predictor.predict_in_box(image, (40.0, 30.0, 200.0, 180.0))
    assert calls[0] == 1 and len(drawn) == 1
    expected = Predictor(mask_model, device="cpu").predict_in_box(image, (40.0, 30.0, 200.0, 180.0))
    assert torch.equal(drawn.masks, expected.masks)


def test_predict_in_box_on_a_detection_reproduces_its_mask(mask_model, image) -> None:
    predictor = Predictor(mask_model, device="cpu")
    found = predictor.predict(image)
    for i in range(3):
        drawn = predictor.predict_in_box(image, found.boxes[i].tolist(), label=int(found.labels[i]))
        assert drawn.label_names == [found.label_names[i]]
        assert mask_iou(drawn.masks[0], found.masks[i]) > 0.99


def test_keypoint_model_gives_keypoints_inside_the_drawn_box(image) -> None:
    torch.manual_seed(0)
    model = build_model("keypointrcnn_resnet50_fpn", **{**SMALL, "box_detections_per_img": 3})
    predictor = Predictor(model, device="cpu")
    found = predictor.predict(image)
    assert found.masks is None
    assert found.keypoints is not None and found.keypoints.shape == (3, 17, 3)
    assert found.keypoint_scores is not None and found.keypoint_scores.shape == (3, 17)
    assert predictor.keypoint_names[0] == "nose" and len(predictor.keypoint_skeleton) == 19

    drawn = predictor.predict_in_box(image, (50.0, 20.0, 150.0, 220.0), label="person")
    assert drawn.label_names == ["person"]
    xy = drawn.keypoints[0, :, :2]
    assert ((xy[:, 0] >= 50) & (xy[:, 0] <= 150) & (xy[:, 1] >= 20) & (xy[:, 1] <= 220)).all()
    assert (drawn.keypoints[0, :, 2] == 1).all()


def test_cancel_stops_the_running_prediction_and_the_next_one_runs(mask_model, image) -> None:
    predictor = Predictor(build_model("maskrcnn_resnet50_fpn", **SMALL), device="cpu")
    predictor.model.load_state_dict(mask_model.state_dict())
    backbone = predictor.model.backbone
    original = backbone.forward

    def cancelled_midway(x: torch.Tensor) -> list[torch.Tensor]:
        predictor.cancel()  # as the GUI thread would, while the backbone runs
        return original(x)

    backbone.forward = cancelled_midway  # type: ignore[method-assign]
    with pytest.raises(PredictionCancelled):
        predictor.predict(image)
    backbone.forward = original  # type: ignore[method-assign]
    assert len(predictor.predict(image)) == 10


def test_predict_batch_equals_one_image_at_a_time(mask_model, image) -> None:
    predictor = Predictor(mask_model, device="cpu", channels_last=False)
    other = make_sample(np.random.default_rng(1), 200, 260)[0]
    batched = predictor.predict_batch([image, other])
    for found, single in zip(batched, [predictor.predict(image), predictor.predict(other)]):
        assert torch.equal(found.labels, single.labels)
        torch.testing.assert_close(found.boxes, single.boxes, rtol=0, atol=1e-3)
        assert min(mask_iou(a, b) for a, b in zip(found.masks, single.masks)) > 0.98


def test_score_threshold_filters_before_paste_and_empty_results_keep_shapes(mask_model, image) -> None:
    found = Predictor(mask_model, device="cpu", score_threshold=1.01).predict(image)
    assert len(found) == 0 and found.masks.shape == (0, 240, 320) and found.label_names == []


def test_grey_and_rgba_images_and_float_tensors_are_accepted(mask_model, image) -> None:
    predictor = Predictor(mask_model, device="cpu")
    assert predictor.predict(image[:, :, 0]).masks.shape[1:] == (240, 320)
    rgba = np.concatenate([image, np.full((240, 320, 1), 255, np.uint8)], axis=2)
    assert torch.equal(predictor.predict(rgba).labels, predictor.predict(image).labels)
    tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    assert torch.equal(predictor.predict(tensor).labels, predictor.predict(image).labels)


def test_a_read_only_image_array_is_predicted_without_a_warning() -> None:
    # np.asarray of a PIL image is read-only; torch warns once a process of such arrays, so a
    # fresh process tells whether predict passes one to torch
    script = """
import warnings
import numpy as np
from model.predictor import Predictor
from resources import DEMO_MODEL
image = np.zeros((48, 64, 3), np.uint8)
image.flags.writeable = False
warnings.simplefilter("error")
Predictor(DEMO_MODEL, device="cpu").predict(image)
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_model_version_names_the_weights_file(tmp_path: Path) -> None:
    model = build_model("maskrcnn_resnet50_fpn", backbone_depth=18, class_names=("__background__", "cat"))
    path = save_weights(model, tmp_path / "cats.safetensors")
    predictor = Predictor(path, device="cpu", progress=False)
    assert predictor.model_version.startswith("cats@") and len(predictor.model_version) == len("cats@") + 8
    assert predictor.class_names == ("__background__", "cat")


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="has an accelerator")
def test_auto_device_is_the_cpu_without_an_accelerator() -> None:
    assert choose_device("auto") == torch.device("cpu")


def test_importing_the_model_package_and_image_reader_does_not_import_torch() -> None:
    code = "import sys, model, model.images; assert 'torch' not in sys.modules; print(model._LAZY['Predictor'])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2]
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "predictor"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_gives_the_cpus_detections_on_the_trained_demo_model(monkeypatch) -> None:
    # The trained demo model, not a random-init one: a random-init network's scores are near-ties
    # that its RPN's top-k and NMS amplify, so that even channels-last on the CPU changes its top
    # five labels (as did the second GPU run's float32, with IEEE convolutions). cuDNN convolves
    # float32 in TF32 by default (10 mantissa bits): here float32 means IEEE.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    cpu = Predictor(DEMO_MODEL, device="cpu", precision="fp32")
    float32 = Predictor(DEMO_MODEL, device="cuda", precision="fp32")
    float16 = Predictor(DEMO_MODEL, device="cuda")
    assert (float32.execution, float16.execution) == ("cuda · fp32", "cuda · fp16") and float16.channels_last
    for path in sorted((DEMO_DIR / "images").iterdir())[:3]:
        image = read_image(path)
        expected = cpu.predict(image, score_threshold=DISPLAY_THRESHOLD)
        found = float32.predict(image, score_threshold=DISPLAY_THRESHOLD)
        assert found.masks.device.type == "cpu" and found.masks.dtype == torch.bool
        assert len(found) == len(expected) >= 3, path.name
        for i in range(len(expected)):  # matched by mask: near-equal scores may come in either order
            j = max(range(len(found)), key=lambda j: mask_iou(expected.masks[i], found.masks[j]))
            assert found.labels[j] == expected.labels[i] and mask_iou(expected.masks[i], found.masks[j]) > 0.98
            torch.testing.assert_close(found.boxes[j], expected.boxes[i], rtol=0, atol=0.5)
            torch.testing.assert_close(found.scores[j], expected.scores[i], rtol=0, atol=1e-3)
            offset = (found.keypoints[j, :, :2] - expected.keypoints[i, :, :2]).abs()
            assert offset.median() < 0.5, path.name  # a flat heatmap's argmax may move

        # float16, held as bfloat16 is on the CPU (tests/model/test_precision.py), with 3 more bits
        half = float16.predict(image, score_threshold=DISPLAY_THRESHOLD)
        assert abs(len(half) - len(expected)) <= 1
        assert statistics.median(max(mask_iou(m, n) for n in half.masks) for m in expected.masks) >= 0.99
        box, label = expected.boxes[0].tolist(), int(expected.labels[0])
        drawn = float16.predict_in_box(image, box, label=label)
        assert mask_iou(drawn.masks[0], expected.masks[0]) > 0.95
