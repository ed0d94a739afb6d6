"""Box to mask with a category the model does not know: the mask head segments the box
class-agnostic and the instance takes the caller's category (docs/decisions/0016). Measured on the
bundled demo model with shapes it never saw (model.synthetic_novel)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.predictor import Predictor
from model.synthetic_novel import make_novel_sample
from resources import DEMO_MODEL


@pytest.fixture(scope="module")
def demo() -> Predictor:
    return Predictor(DEMO_MODEL, device="cpu")


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, list]:
    """A cross and a heart, nothing the demo model knows, on one of its backgrounds."""
    image, shapes = make_novel_sample(np.random.default_rng(5), 240, 320, known_shapes=(0, 0), novel_shapes=(2, 2))
    assert [s["name"] for s in shapes] == ["cross", "heart"]
    return image, shapes


def drawn_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return xs.min() - 2.0, ys.min() - 2.0, xs.max() + 3.0, ys.max() + 3.0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_a_box_with_a_category_the_model_does_not_know_gets_the_mask_of_its_object_and_that_category(
    demo, scene
) -> None:
    image, shapes = scene
    assert "cat" not in demo.class_names
    for shape in shapes:
        drawn = demo.predict_in_box(image, drawn_box(shape["mask"]), label="cat")
        assert drawn.label_names == ["cat"]
        assert mask_iou(drawn.masks[0].numpy(), shape["mask"]) > 0.85
        assert drawn.keypoints is None  # the model's keypoints belong to its own classes
        assert 0.5 < float(drawn.scores[0]) <= 1  # an object of some class, whichever


def test_the_class_agnostic_mask_is_the_mask_of_the_boxs_most_probable_class(demo, scene) -> None:
    image, shapes = scene
    box = drawn_box(shapes[0]["mask"])
    unknown = demo.predict_in_box(image, box, label="cat")
    classified = demo.predict_in_box(image, box)  # the box head picks the class
    assert torch.equal(unknown.masks, classified.masks) and torch.equal(unknown.labels, classified.labels)
    assert classified.label_names != ["cat"] and classified.keypoints is not None
    assert not demo.has_keypoints("cat") and demo.has_keypoints("star")


def test_a_known_category_and_a_class_index_keep_their_meaning(demo, scene) -> None:
    image, shapes = scene
    box = drawn_box(shapes[1]["mask"])
    star = demo.predict_in_box(image, box, label="star")
    by_index = demo.predict_in_box(image, box, label=demo.class_names.index("star"))
    assert star.label_names == by_index.label_names == ["star"] and torch.equal(star.masks, by_index.masks)
    with pytest.raises(ValueError, match="out of range"):
        demo.predict_in_box(image, box, label=len(demo.class_names))
