"""The bundled demo: a new user gets working mask and keypoint proposals offline."""

from __future__ import annotations

from model.data import load_coco
from model.evaluation import evaluate
from model.predictor import Predictor
from resources import DEMO_DIR, DEMO_MODEL


def test_bundled_demo_model_proposes_masks_and_keypoints_on_the_demo_images() -> None:
    predictor = Predictor(DEMO_MODEL, device="cpu")
    assert predictor.class_names[1:] == ("ellipse", "rectangle", "triangle", "star")
    assert predictor.keypoint_names == ("centre", "top", "right", "bottom", "left")
    data = load_coco(DEMO_DIR / "annotations.json", DEMO_DIR / "images")
    summary = evaluate(predictor, data)
    # held-out synthetic images of the kind it was trained on (0.78 / 0.66 when it was bundled)
    assert summary["segm"]["AP"] >= 0.6
    assert summary["keypoints"]["AP"] >= 0.5
