"""A box-only label (a COCO annotation with a bbox and no segmentation, as export writes a box not
yet refined into a mask) counts for box AP and the box loss, and is ignored for mask AP and the
mask loss (docs/decisions/0015-box-only-labels.md): evaluation, training and its held-out
evaluation all read it so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import main
from model.data import CocoDataset, load_coco
from model.evaluation import coco_evaluate
from model.weights.formats import save_weights
from tests.files import write_json
from tests.model.small import events_of, tiny_model


def _box_only(shapes: Path, folder: Path, every: bool = False) -> Path:
    """The shapes file with the segmentation taken from the first annotation of each image (or
    from every annotation)."""
    data = json.loads(shapes.read_text())
    seen: set[int] = set()
    for annotation in data["annotations"]:
        if every or annotation["image_id"] not in seen:
            del annotation["segmentation"]
            seen.add(annotation["image_id"])
    return write_json(folder / "box_only.json", data)


def test_a_box_only_label_counts_for_box_ap_and_is_ignored_for_mask_ap(shapes, tmp_path):
    perfect = load_coco(shapes, shapes.parent / "images").ground_truth()["annotations"]
    ground_truth = load_coco(_box_only(shapes, tmp_path), shapes.parent / "images").ground_truth()
    # the original labels as predictions: masks even where the ground truth has only a box
    results = [{**a, "score": 1.0} for a in perfect]
    summary = coco_evaluate(ground_truth, results, ("bbox", "segm"))
    assert summary["bbox"]["AP"] == pytest.approx(1.0)
    # a mask predicted on a box-only label is neither a hit nor a false positive
    assert summary["segm"]["AP"] == pytest.approx(1.0)
    # left out of the results, the box-only labels are missed boxes, and still no mask AP is lost
    with_masks = [r for r, a in zip(results, ground_truth["annotations"]) if "segmentation" in a]
    partial = coco_evaluate(ground_truth, with_masks, ("bbox", "segm"))
    assert partial["bbox"]["AP"] < 1.0
    assert partial["segm"]["AP"] == pytest.approx(1.0)


def test_a_box_only_label_gets_no_mask_loss(shapes, tmp_path):
    data = load_coco(_box_only(shapes, tmp_path, every=True), shapes.parent / "images")
    image, target = CocoDataset(data)[0]
    assert not target["has_mask"].any() and target["masks"].sum() == 0
    model = tiny_model()
    model.train()
    losses = model.losses([image.float() / 255], [target])
    assert losses["loss_mask"].item() == 0.0  # no RoI with a mask to learn
    assert losses["loss_box_reg"].item() > 0.0  # the boxes still teach the box head


def test_evaluate_reads_an_export_with_a_box_only_label(shapes, tmp_path, capsys):
    weights = save_weights(tiny_model(), tmp_path / "model.safetensors")
    coco = _box_only(shapes, tmp_path)
    arguments = ["evaluate", str(coco), "--images", str(shapes.parent / "images"), "--weights", str(weights)]
    assert main.main([*arguments, "--json", "--device", "cpu"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= last["segm"]["AP"] <= 1 and 0 <= last["bbox"]["AP"] <= 1


def test_training_with_box_only_labels_held_out_ends_with_its_evaluation(shapes, tmp_path, capsys):
    coco = _box_only(shapes, tmp_path)  # every image has one: so has every held-out image
    arguments = ["train", str(coco), "--images", str(shapes.parent / "images"), "--out", str(tmp_path / "run")]
    sizes = ["--weights", "none", "--min-size", "128", "--max-size", "128", "--batch-size", "2", "--workers", "0"]
    run = ["--iters", "2", "--val-fraction", "0.5", "--device", "cpu"]
    assert main.main([*arguments, *sizes, *run]) == 0
    events = events_of(capsys.readouterr().out)
    evaluations = [e for e in events if e["event"] == "eval"]
    assert evaluations and "segm" in evaluations[-1] and "bbox" in evaluations[-1]
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in events if e["event"] == "progress" and "loss" in e)
