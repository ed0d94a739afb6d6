"""``auto`` keeps bfloat16 only for weights on which it agrees with float32 (issue 19, item 2):
checked once per weights version on the first images proposed on, the verdict kept, float32 where
it disagrees, and an explicit choice left alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from annotator.proposals import propose
from annotator.store import Project
from model import precision
from model.images import read_image
from model.precision_check import Agreement, Tolerances, compare, read_verdict, verdict_key
from model.predictor import Predictor
from model.structures import Instances
from resources import DEMO_DIR, DEMO_MODEL

DISPLAY_THRESHOLD = 0.5
NEVER_AGREES = Tolerances(median_mask_iou=1.01)  # no mask IoU reaches it: the check must fail


@pytest.fixture(autouse=True)
def native_bf16(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # the verdicts' default place


@pytest.fixture
def demo_images() -> list[np.ndarray]:
    return [read_image(path) for path in sorted((DEMO_DIR / "images").iterdir())[:3]]


def counting_predictions(predictor: Predictor) -> list[int]:
    calls = [0]
    predict = predictor.predict

    def counted(*args, **kwargs):
        calls[0] += 1
        return predict(*args, **kwargs)

    predictor.predict = counted
    return calls


def test_the_trained_demo_model_keeps_bf16_and_the_verdict_is_kept_for_its_weights(tmp_path, demo_images) -> None:
    verdicts = tmp_path / "verdicts.json"
    first = Predictor(DEMO_MODEL, device="cpu", precision="auto", score_threshold=DISPLAY_THRESHOLD)
    note = first.settle_precision(demo_images, verdicts=verdicts)
    assert note.startswith(f"bf16 agrees with fp32 on {first.model_version} (3 images:")
    assert first.execution == "cpu · bf16" and first.precision_note == note
    kept = json.loads(verdicts.read_text())[verdict_key(first.model_version)]
    assert kept["precision"] == "bf16" and kept["median_mask_iou"] >= 0.99 and kept["worst_count_difference"] <= 1

    again = Predictor(DEMO_MODEL, device="cpu", precision="auto", score_threshold=DISPLAY_THRESHOLD)
    calls = counting_predictions(again)
    assert again.settle_precision(demo_images, verdicts=verdicts).endswith("(decided before for these weights)")
    assert calls == [0] and again.execution == "cpu · bf16"
    assert again.settle_precision(demo_images, verdicts=verdicts) == ""  # settled: asked once


def test_weights_outside_the_tolerances_run_in_fp32_give_its_detections_and_say_so(tmp_path, demo_images) -> None:
    verdicts = tmp_path / "verdicts.json"
    checked = Predictor(DEMO_MODEL, device="cpu", precision="auto", score_threshold=DISPLAY_THRESHOLD)
    note = checked.settle_precision(demo_images[:1], tolerances=NEVER_AGREES, verdicts=verdicts)
    assert note.startswith(f"bf16 disagreed with fp32 on {checked.model_version}: running fp32 (1 image:")
    assert checked.execution == "cpu · fp32"
    assert read_verdict(verdict_key(checked.model_version), verdicts) == "fp32"

    exact = Predictor(DEMO_MODEL, device="cpu", precision="fp32", score_threshold=DISPLAY_THRESHOLD)
    found, expected = checked.predict(demo_images[1]), exact.predict(demo_images[1])
    assert torch.equal(found.masks, expected.masks) and torch.equal(found.scores, expected.scores)

    later = Predictor(DEMO_MODEL, device="cpu", precision="auto", score_threshold=DISPLAY_THRESHOLD)
    later.settle_precision(demo_images, verdicts=verdicts)  # the kept verdict, not a new check
    assert later.execution == "cpu · fp32"


def test_an_explicit_bf16_is_not_second_guessed_and_nothing_is_written(tmp_path, demo_images) -> None:
    chosen = Predictor(DEMO_MODEL, device="cpu", precision="bf16")
    assert chosen.settle_precision(demo_images, tolerances=NEVER_AGREES, verdicts=tmp_path / "v.json") == ""
    assert chosen.execution == "cpu · bf16" and not (tmp_path / "v.json").exists()


def test_propose_checks_bf16_once_on_its_first_image_and_reports_it(tmp_path) -> None:
    images = sorted((DEMO_DIR / "images").iterdir())[:2]
    with Project.create(tmp_path / "p.annot", DEMO_DIR / "images") as project:
        for path in images:
            pixels = read_image(path)
            project.add_image(path.name, pixels.shape[1], pixels.shape[0], "hash-" + path.name)
        predictor = Predictor(DEMO_MODEL, device="cpu", precision="auto")
        report = propose(project, predictor, list(project.iter_images()), lambda i: read_image(project.image_path(i)))
    assert report.images == 2 and report.precision_note.startswith("bf16 agrees with fp32")
    assert read_verdict(verdict_key(predictor.model_version)) == "bf16"  # under $TORCH_HOME


def instances(masks: list[tuple[int, int, int, int]], keypoint_shift: float = 0.0) -> Instances:
    """Rectangular masks (x, y, w, h) on a 40 x 30 image, one keypoint at each mask's corner."""
    found = torch.zeros(len(masks), 30, 40, dtype=torch.bool)
    for index, (x, y, w, h) in enumerate(masks):
        found[index, y : y + h, x : x + w] = True
    corners = torch.tensor([[[x + keypoint_shift, y, 2.0]] for x, y, _, _ in masks], dtype=torch.float32)
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in masks], dtype=torch.float32).reshape(-1, 4)
    return Instances(
        (30, 40),
        boxes,
        torch.ones(len(masks)),
        torch.ones(len(masks), dtype=torch.int64),
        ["a"] * len(masks),
        found,
        corners.reshape(len(masks), 1, 3),
    )


def test_agreement_counts_lost_detections_mask_overlap_and_keypoint_shift() -> None:
    same = compare([instances([(0, 0, 10, 10), (20, 5, 10, 10)])], [instances([(0, 0, 10, 10), (20, 5, 10, 10)])])
    assert same == Agreement(1, 0, 1.0, 0.0) and same.passes(Tolerances())

    one_lost = compare([instances([(0, 0, 10, 10), (20, 5, 10, 10)])], [instances([(0, 0, 10, 10)])])
    assert one_lost.worst_count_difference == 1 and one_lost.median_mask_iou == pytest.approx(0.5)
    assert not one_lost.passes(Tolerances())

    shifted = compare([instances([(0, 0, 10, 10)])], [instances([(0, 0, 10, 10)], keypoint_shift=3.0)])
    assert shifted.keypoint_px == pytest.approx(3.0) and not shifted.passes(Tolerances())
    assert compare([instances([])], [instances([])]).passes(Tolerances())  # nothing found either way
