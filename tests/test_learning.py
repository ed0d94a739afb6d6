"""annotator.learning, the round of learning as you label, headless: a round fine-tunes the model in
use on the images marked done (``main.py train`` as a child process, a couple of steps here) and
keeps the new model only when it is not worse on the held-out done images; each image stays on its
side of the split in every round; a failed training changes nothing; and the image-level
uncertainty that orders "most useful image next"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from annotator.coco import import_coco
from annotator.learning import (
    RoundResult,
    RoundSettings,
    held_out,
    image_doubts,
    image_uncertainty,
    learning_round,
    least_sure_next,
    not_worse,
)
from annotator.store import Project, ReviewState, Source
from model.builders import config_for
from model.detector import MaskRCNN
from model.synthetic import generate
from model.weights.formats import save_weights
from resources import bundled_model

# half the done images held out, so that a handful of images has both sides
SPLIT = 0.5


def settings(**changes) -> RoundSettings:
    """Two steps on the CPU with one thread: a round in seconds."""
    return RoundSettings(**{"iterations": 2, "device": "cpu", "threads": 1, "held_out_fraction": SPLIT, **changes})


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    """Six 128 x 128 images of the demo's shapes with their labels, nothing marked done yet."""
    folder = tmp_path_factory.mktemp("learning")
    gt = generate(folder / "data", 6, seed=2026, size=(128, 128), min_shapes=2, max_shapes=3, shape_size=(0.3, 0.45))
    project = Project.create(folder / "shapes.annot", gt.parent / "images")
    import_coco(project, gt)
    yield project
    project.close()


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> Path:
    """A randomly initialised small model at 128 pixels: it proposes nothing, AP 0."""
    torch.manual_seed(0)
    model = MaskRCNN(config_for("maskrcnn_resnet18_fpn_small", min_size=128, max_size=128))
    return save_weights(model, tmp_path_factory.mktemp("untrained") / "untrained.safetensors")


def mark_done(project: Project, count: int) -> None:
    for image in project.images()[:count]:
        project.set_review_state(image.id, ReviewState.DONE)


def split_of(run_dir: Path) -> tuple[set[int], set[int]]:
    """The image ids a round trained on and those it held out."""
    trained, kept_out = (json.loads((run_dir / name).read_text())["images"] for name in ("train.json", "held-out.json"))
    return {entry["id"] for entry in trained}, {entry["id"] for entry in kept_out}


def snapshot(project: Project) -> list:
    """Every image with its review state and its instances."""
    return [(image, project.instances(image.id)) for image in project.images()]


def test_rounds_replace_the_model_when_not_worse_keep_it_when_worse_and_keep_every_image_on_its_side(
    project, untrained, tmp_path
):
    sides = [held_out(image, SPLIT) for image in project.images()]
    assert any(sides[:4]) and not all(sides[:4])  # the data: both sides from the first round on
    mark_done(project, 4)
    before = snapshot(project)[:4]

    # one pass over the images trained on, one image a step
    steps = []
    length = settings(iterations=None, epochs=1, batch_size=1)
    older = tmp_path / "round-0"  # a round run before rounds removed their checkpoints
    older.mkdir()
    for name in ("checkpoint_0000500.pth", "last_checkpoint", "model_final.safetensors"):
        (older / name).write_bytes(b"0")
    first = learning_round(project, str(untrained), tmp_path / "round-1", length, steps.append)
    assert (first.current_ap, first.new_ap) == (0.0, 0.0)  # neither proposes anything: not worse
    assert first.iterations == first.trained_on == max(e["iteration"] for e in steps if e["event"] == "progress")
    assert first.replaced and first.weights == str(tmp_path / "round-1" / "model_final.safetensors")
    assert Path(first.weights).is_file() and not first.failed
    assert not list((tmp_path / "round-1").glob("*checkpoint*"))  # a round is never continued
    assert [p.name for p in older.iterdir()] == ["model_final.safetensors"]  # nor was an earlier one
    assert (first.trained_on, first.held_out) == (4 - sum(sides[:4]), sum(sides[:4]))

    mark_done(project, 6)
    # the demo model does well on its shapes; two steps at a learning rate of 1 ruin it
    second = learning_round(project, str(bundled_model()), tmp_path / "round-2", settings(lr=1.0))
    assert second.current_ap > 0.3 and second.new_ap < second.current_ap
    assert second.current_keypoint_ap > 0.3 and second.new_keypoint_ap < second.current_keypoint_ap
    assert "keypoint AP" in second.reason
    assert not second.replaced and not second.failed
    assert second.weights == str(bundled_model().resolve())
    assert "worse" in second.reason

    ids = [image.id for image in project.images()]
    for round_dir, count in ((tmp_path / "round-1", 4), (tmp_path / "round-2", 6)):
        trained, kept_out = split_of(round_dir)
        assert kept_out == {i for i, side in zip(ids[:count], sides) if side}
        assert trained == set(ids[:count]) - kept_out
    # the rounds only read the project
    assert snapshot(project)[:4] == before


def test_a_round_trains_its_epochs_in_steps_up_to_the_cap():
    rule = RoundSettings()
    assert rule.round_iterations(6) == 360  # 120 passes over 6 images, 2 a step
    assert rule.round_iterations(100) == rule.max_iterations == 1000  # an hour's 6000 steps, capped
    assert rule.round_iterations(0) == 1
    assert RoundSettings(epochs=1, batch_size=4).round_iterations(5) == 2  # a last, partial batch counts
    assert RoundSettings(iterations=7).round_iterations(100) == 7  # given steps win
    # the fine-tune dialog's default, in whole passes
    assert (rule.whole_epochs(6), rule.whole_epochs(100), rule.whole_epochs(3000)) == (120, 20, 1)


def test_a_new_model_is_not_worse_by_mask_and_keypoint_ap_together_or_by_mask_ap_without_keypoints():
    def result(new_mask, new_keypoints, current_mask, current_keypoints):
        aps = {"current_ap": current_mask, "new_ap": new_mask}
        return RoundResult("w", False, "", **aps, current_keypoint_ap=current_keypoints, new_keypoint_ap=new_keypoints)

    # the loop's round 2 (bench/results/2026-12-03-loop-cpu.md): a tenth of a point of mask AP
    # lost, a point of keypoint AP gained
    assert not_worse(result(0.764, 0.706, 0.765, 0.697))
    assert not not_worse(result(0.764, 0.690, 0.765, 0.697))
    assert not not_worse(result(0.764, None, 0.765, None))  # no keypoints: mask AP alone
    assert not_worse(result(0.765, None, 0.765, 0.9))  # ties go to the new model
    assert not_worse(result(0.5, 0.5, 0.5, 0.5))


def test_a_failed_training_changes_nothing_and_says_why(project, tmp_path):
    mark_done(project, 6)
    before = snapshot(project)
    result = learning_round(project, str(tmp_path / "no-such-model.safetensors"), tmp_path / "run", settings())
    assert result.failed and not result.replaced
    assert result.weights == str(tmp_path / "no-such-model.safetensors")
    assert result.reason.startswith("training failed: ") and "no-such-model.safetensors" in result.reason
    assert "Traceback" not in "\n".join(result.log)
    assert snapshot(project) == before


def test_a_round_with_only_held_out_images_done_trains_nothing(tmp_path, untrained):
    gt = generate(tmp_path / "data", 6, seed=2026, size=(128, 128), min_shapes=2, max_shapes=3)
    with Project.create(tmp_path / "p.annot", gt.parent / "images") as project:
        import_coco(project, gt)
        for image in project.images():
            if held_out(image, SPLIT):
                project.set_review_state(image.id, ReviewState.DONE)
        result = learning_round(project, str(untrained), tmp_path / "run", settings())
    assert not result.replaced and result.weights == str(untrained)
    assert result.reason.startswith("nothing to train on") and not (tmp_path / "run").exists()


def test_the_split_follows_the_image_content_not_its_id_or_the_order_done():
    from annotator.records import ImageRecord

    image = ImageRecord(1, "a.png", 4, 4, "00" * 32, ReviewState.DONE)
    same_pixels = ImageRecord(99, "copy.png", 4, 4, "00" * 32, ReviewState.UNLABELED)
    other = ImageRecord(1, "a.png", 4, 4, "ff" * 32, ReviewState.DONE)
    assert held_out(image) and held_out(same_pixels) and not held_out(other)


def test_the_image_where_proposals_sit_near_the_threshold_is_the_least_sure():
    confident = image_uncertainty([0.99, 0.97, 0.02])
    one_doubt = image_uncertainty([0.99, 0.97, 0.52])
    all_doubts = image_uncertainty([0.55, 0.45, 0.5])
    assert confident < one_doubt < all_doubts <= 1.0
    assert image_uncertainty([0.5]) == 1.0 and image_uncertainty([1.0]) == image_uncertainty([0.0]) == 0.0
    assert image_uncertainty([]) == 1.0  # nothing found: the person draws everything
    assert image_uncertainty([None, 0.99]) == image_uncertainty([0.99])  # a box's mask has no score
    # the threshold the proposals are shown from sets where doubt is greatest
    assert image_uncertainty([0.3], threshold=0.3) == 1.0 > image_uncertainty([0.3], threshold=0.5)


def test_the_least_sure_proposed_image_comes_next_then_unlabeled_ones_in_list_order(tmp_path):
    with Project.create(tmp_path / "order.annot", tmp_path) as project:
        for name in ("a.png", "b.png", "c.png", "d.png"):
            project.add_image(name, 8, 8, "0" * 64)
        project.add_category("cell")
        for image_id, score in ((2, 0.95), (3, 0.55)):  # c's proposal is near the threshold
            project.add_instance(image_id, 1, bbox=(1, 1, 3, 3), score=score, source=Source.MODEL)
            project.set_review_state(image_id, ReviewState.PROPOSED)
        doubts = image_doubts(project)
        assert set(doubts) == {2, 3} and doubts[3] > doubts[2]
        assert least_sure_next(project, 1) == 3
        assert least_sure_next(project, 3) == 2
        project.set_review_state(2, ReviewState.DONE)
        project.set_review_state(3, ReviewState.DONE)
        assert least_sure_next(project, 1) == 4  # none proposed: the next unlabeled in list order
