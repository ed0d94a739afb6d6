"""The execution policy (model.precision): which precision runs where (the processor's bfloat16
capability mocked at the one function that detects it), bfloat16 giving float32's detections on
the trained demo model, and batch norm folded into the convolutions changing only rounding."""

from __future__ import annotations

import copy
import statistics
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import main
from model import box_ops as model_box_ops
from model import precision, save_weights
from model import roi_heads as model_roi_heads
from model import rpn as model_rpn
from model.backbone import FrozenBatchNorm2d
from model.images import read_image
from model.precision import choose_policy, fold_batch_norms, training_autocast
from model.precision import cpu_has_native_bf16 as detect_native_bf16  # the real one, whatever a fixture mocks
from model.predictor import Predictor
from model.synthetic import make_sample
from resources import DEMO_DIR, DEMO_MODEL
from tests.model.small import TINY, tiny_model

CPU = torch.device("cpu")
# the display threshold of proposals (main.py propose --score-thresh)
DISPLAY_THRESHOLD = 0.5


@pytest.fixture
def native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)


@pytest.fixture
def no_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else 1.0


def frozen_bn_model() -> torch.nn.Module:
    """The small architecture with a frozen-BN body whose statistics are not the identity."""
    model = tiny_model(backbone_norm="frozen_bn", box_score_thresh=0.0).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, FrozenBatchNorm2d):
                c = module.weight.shape[0]
                module.running_mean.copy_(0.1 * torch.randn(c, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(c, generator=generator))
                module.weight.copy_(0.5 + torch.rand(c, generator=generator))
                module.bias.copy_(0.1 * torch.randn(c, generator=generator))
    return model


# -- the choice ------------------------------------------------------------------------------


def test_auto_runs_bfloat16_channels_last_on_a_cpu_with_native_bfloat16(native_bf16) -> None:
    policy = choose_policy(CPU, "auto")
    assert policy.autocast_dtype == torch.bfloat16 and policy.channels_last
    assert policy.description == "cpu · bf16"


def test_auto_stays_in_float32_on_a_cpu_without_native_bfloat16(no_native_bf16) -> None:
    policy = choose_policy(CPU, "auto")
    assert policy.autocast_dtype is None and policy.channels_last
    assert policy.description == "cpu · fp32"


def test_forced_precisions_override_the_capability(native_bf16) -> None:
    assert choose_policy(CPU, "fp32").precision == "fp32"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_policy(CPU, "bf16").precision == "bf16"


def test_forced_bfloat16_without_native_support_runs_with_a_warning(no_native_bf16) -> None:
    with pytest.warns(RuntimeWarning, match="slower than float32"):
        predictor = Predictor(tiny_model(), device="cpu", precision="bf16")
    assert predictor.execution == "cpu · bf16"
    image = make_sample(np.random.default_rng(0), 96, 128)[0]
    found = predictor.predict(image)
    assert found.boxes.dtype == torch.float32 and found.masks is not None and found.masks.dtype == torch.bool


def test_auto_is_float16_on_cuda_and_float32_on_other_devices(native_bf16) -> None:
    assert choose_policy(torch.device("cuda"), "auto").description == "cuda · fp16"
    assert choose_policy(torch.device("mps"), "auto").description == "mps · fp32"
    assert not choose_policy(torch.device("mps"), "auto").channels_last


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        choose_policy(CPU, "int8")


@pytest.mark.parametrize(("flags", "native"), [("fpu avx2 avx512f", False), ("fpu avx512f avx512_bf16", True)])
def test_native_bfloat16_is_read_from_the_cpu_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: str, native: bool
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    monkeypatch.setattr(precision, "_CPUINFO", cpuinfo)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):  # where this torch has them
        monkeypatch.setattr(torch._C._cpu, probe, lambda: False, raising=False)
    assert detect_native_bf16.__wrapped__() is native  # uncached


# -- both paths on small models --------------------------------------------------------------


def test_bfloat16_gives_the_detections_of_float32_in_float32_on_the_trained_demo_model(native_bf16) -> None:
    exact = Predictor(DEMO_MODEL, device="cpu", precision="fp32")
    fast = Predictor(DEMO_MODEL, device="cpu", precision="auto")
    assert (exact.execution, fast.execution) == ("cpu · fp32", "cpu · bf16")
    for path in sorted((DEMO_DIR / "images").iterdir())[:3]:
        image = read_image(path)
        expected = exact.predict(image, score_threshold=DISPLAY_THRESHOLD)
        found = fast.predict(image, score_threshold=DISPLAY_THRESHOLD)
        assert next(iter(fast._cache.values())).features[0].dtype == torch.bfloat16, "the network ran in bfloat16"
        assert found.boxes.dtype == found.scores.dtype == found.keypoints.dtype == torch.float32
        assert found.masks.dtype == torch.bool and found.masks.shape[1:] == image.shape[:2]
        assert abs(len(found) - len(expected)) <= 1 and len(expected) >= 3
        best = [max(mask_iou(m, n) for n in found.masks) for m in expected.masks]
        assert statistics.median(best) >= 0.99, path.name

        drawn = fast.predict_in_box(image, expected.boxes[0].tolist(), label=int(expected.labels[0]))
        assert drawn.scores.dtype == torch.float32 and mask_iou(drawn.masks[0], expected.masks[0]) > 0.95


def test_box_decoding_and_nms_run_in_float32_under_bfloat16(native_bf16, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, torch.dtype]] = []

    def spy(module: object, name: str) -> None:
        original = getattr(module, name)

        def recorded(*args: torch.Tensor, **kwargs: object) -> torch.Tensor:
            seen.extend((name, a.dtype) for a in args if isinstance(a, torch.Tensor) and a.is_floating_point())
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, recorded)

    for module in (model_rpn, model_roi_heads):
        spy(module, "decode_boxes")
    for module in (model_rpn, model_box_ops):  # the box head's NMS runs in box_ops.best_after_nms
        spy(module, "batched_nms")
    predictor = Predictor(tiny_model(box_score_thresh=0.0), device="cpu", precision="bf16")
    predictor.predict(make_sample(np.random.default_rng(0), 96, 128)[0])
    assert {name for name, _ in seen} == {"decode_boxes", "batched_nms"}
    assert {dtype for _, dtype in seen} == {torch.float32}


def test_float32_predictor_equals_the_model_forward() -> None:
    model = tiny_model(box_score_thresh=0.0).eval()
    image = make_sample(np.random.default_rng(0), 96, 128)[0]
    with torch.inference_mode():
        expected = model([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]
    found = Predictor(model, device="cpu", precision="fp32", channels_last=False).predict(image, score_threshold=0.0)
    assert torch.equal(found.labels, expected["labels"])
    torch.testing.assert_close(found.boxes, expected["boxes"])
    torch.testing.assert_close(found.scores, expected["scores"])


# -- folded batch norm -----------------------------------------------------------------------


def test_folded_batch_norm_gives_the_unfolded_outputs_within_rounding() -> None:
    unfolded = frozen_bn_model()
    folded = copy.deepcopy(unfolded)
    norms = sum(isinstance(m, FrozenBatchNorm2d) for m in unfolded.modules())
    assert fold_batch_norms(folded) == norms == 20  # ResNet-18: stem, 2 x 8 blocks, 3 downsamples
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in folded.modules())

    images = [torch.from_numpy(make_sample(np.random.default_rng(2), 128, 128)[0]).permute(2, 0, 1).float() / 255]
    with torch.inference_mode():
        batch = unfolded.preprocess(images)
        for a, b in zip(unfolded.extract_features(batch), folded.extract_features(batch)):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
        expected, actual = unfolded(images)[0], folded(images)[0]
    assert len(expected["boxes"]) > 10
    assert torch.equal(actual["labels"], expected["labels"])
    torch.testing.assert_close(actual["scores"], expected["scores"], rtol=0, atol=1e-4)
    torch.testing.assert_close(actual["boxes"], expected["boxes"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(actual["masks"], expected["masks"], rtol=0, atol=1e-4)


def test_predictor_folds_weights_it_loads_but_not_a_module_it_is_handed(tmp_path: Path) -> None:
    model = frozen_bn_model()
    handed = Predictor(model, device="cpu", precision="fp32")
    assert handed.folded_norms == 0
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules()), "the caller's module keeps its norms"

    path = save_weights(model, tmp_path / "frozen.safetensors")
    loaded = Predictor(path, device="cpu", precision="fp32", progress=False, **TINY)
    assert loaded.folded_norms == 20
    image = make_sample(np.random.default_rng(3), 96, 128)[0]
    expected, found = handed.predict(image, score_threshold=0.0), loaded.predict(image, score_threshold=0.0)
    assert torch.equal(found.labels, expected.labels)
    torch.testing.assert_close(found.scores, expected.scores, rtol=0, atol=1e-4)


# -- the command lines -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["propose", "p.annot"], ["evaluate", "coco.json", "--images", "images"]], ids=["propose", "evaluate"]
)
def test_propose_and_evaluate_take_a_precision(command: list[str], capsys: pytest.CaptureFixture) -> None:
    parser = main.build_parser()
    assert parser.parse_args(command).precision == "auto"
    assert parser.parse_args([*command, "--precision", "bf16"]).precision == "bf16"
    with pytest.raises(SystemExit):
        parser.parse_args([*command, "--precision", "int8"])
    assert "invalid choice: 'int8'" in capsys.readouterr().err


def test_training_autocasts_on_cuda_and_on_a_bf16_cpu_only_for_deep_backbones(native_bf16) -> None:
    assert training_autocast(torch.device("cuda"), 18)
    assert training_autocast(CPU, 50) and training_autocast(CPU, 101)
    assert not training_autocast(CPU, 18)  # the small model gains nothing from bfloat16
    assert not training_autocast(torch.device("mps"), 50)


def test_training_stays_in_float32_on_a_cpu_without_native_bf16(no_native_bf16) -> None:
    assert not training_autocast(CPU, 50) and training_autocast(torch.device("cuda"), 50)
