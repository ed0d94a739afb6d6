"""``main.py propose``: the model's proposals go into the store, image by image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import main
from annotator.proposals import images_to_propose, propose
from annotator.store import Project, ReviewState, Source
from model import build_model
from model.images import read_image
from model.predictor import Predictor
from model.weights.formats import save_weights
from tests.files import write_images


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weights Mask R-CNN with mask and keypoint heads, saved as our own self-describing file."""
    torch.manual_seed(0)
    model = build_model(
        "maskrcnn_resnet50_fpn",
        num_classes=3,
        keypoint_on=True,
        num_keypoints=2,
        min_size=96,
        max_size=128,
        box_score_thresh=0.0,
        box_detections_per_img=5,
        keypoint_names=("head", "tail"),
        keypoint_skeleton=((0, 1),),
    )  # 0-based, as models hold it
    return save_weights(model, tmp_path_factory.mktemp("w") / "tiny.safetensors")


@pytest.fixture
def project(tmp_path: Path) -> Project:
    write_images(tmp_path / "images", [(64, 48), (64, 48), (64, 48)])
    project = Project.create(tmp_path / "p.annot", tmp_path / "images")
    for name in ("0.png", "1.png", "2.png"):
        project.add_image(name, 64, 48, "h")
    project.set_review_state(3, ReviewState.DONE)
    yield project
    project.close()


def test_propose_stores_scored_model_instances_and_marks_images_proposed(
    project: Project, weights: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main.main(["propose", str(project.path), "--weights", str(weights), "--score-thresh", "0"]) == 0
    assert "proposed" in capsys.readouterr().out
    for image_id in (1, 2):
        instances = project.instances(image_id)
        assert 0 < len(instances) <= 5
        assert all(
            i.source == Source.MODEL and i.score is not None and i.model_version.startswith("tiny@") for i in instances
        )
        assert project.image(image_id).state == ReviewState.PROPOSED
    assert project.instances(3) == [] and project.image(3).state == ReviewState.DONE
    category = project.category(project.instances(1)[0].category_id)
    assert category.num_keypoints == 2 and len(project.instances(1)[0].keypoints) == 6
    # a category the model adds takes its keypoint names, and its skeleton 1-based as COCO's
    assert category.keypoints == ("head", "tail") and category.skeleton == ((1, 2),)


def test_proposing_again_replaces_untouched_proposals_and_keeps_edited_ones(project: Project, weights: Path) -> None:
    predictor = Predictor(weights, device="cpu", score_threshold=0.0)
    images = images_to_propose(project, unlabeled_only=False)
    reader = lambda image: read_image(project.image_path(image))  # noqa: E731
    propose(project, predictor, images, reader)
    first = project.instances(1)
    edited = project.update_instance(first[0].id, mask=np.ones((48, 64), bool))
    propose(project, predictor, images_to_propose(project, unlabeled_only=False), reader)
    again = project.instances(1)
    assert edited in again
    assert {i.id for i in again if i.source == Source.MODEL}.isdisjoint(i.id for i in first)
    assert len([i for i in again if i.source == Source.MODEL]) == len(first)


def test_interrupted_run_keeps_every_image_finished_before_it(project: Project, weights: Path) -> None:
    predictor = Predictor(weights, device="cpu", score_threshold=0.0)
    calls = []

    def read_then_interrupt(image):
        calls.append(image.id)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl+C while the second image is being read
        return read_image(project.image_path(image))

    report = propose(project, predictor, images_to_propose(project, unlabeled_only=False), read_then_interrupt)
    assert report.stopped and report.images == 1
    assert project.instances(1) and project.image(1).state == ReviewState.PROPOSED
    assert project.instances(2) == [] and project.image(2).state == ReviewState.UNLABELED


def test_unlabeled_only_skips_images_already_proposed(project: Project, weights: Path) -> None:
    project.set_review_state(2, ReviewState.PROPOSED)
    assert [i.id for i in images_to_propose(project, unlabeled_only=True)] == [1]


def test_missing_weights_file_is_one_line(project: Project, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nothing.pth"
    assert main.main(["propose", str(project.path), "--weights", str(missing)]) == main.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"error: {missing}: ") and err.count("\n") == 1
    assert project.instance_count() == 0


def test_proposed_masks_are_stored_at_image_resolution(project: Project, weights: Path) -> None:
    predictor = Predictor(weights, device="cpu", score_threshold=0.0)
    propose(
        project,
        predictor,
        images_to_propose(project, unlabeled_only=True),
        lambda image: read_image(project.image_path(image)),
    )
    masked = [i for i in project.instances(1) if i.rle is not None]
    assert masked and all(i.mask.shape == (48, 64) and i.area == i.mask.sum() for i in masked)


def test_damaged_weights_file_is_one_line(project: Project, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"not a safetensors file")
    assert main.main(["propose", str(project.path), "--weights", str(damaged)]) == main.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"error: {damaged}: cannot load these weights") and err.count("\n") == 1


def _project_over(tmp_path: Path, images: list[tuple[str, int, int]]) -> Project:
    """A project holding ``(name, width, height)`` images, added as ``new`` added them then."""
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    project = Project.create(tmp_path / "p.annot", folder)
    for name, width, height in images:
        Image.fromarray(np.full((height, width, 3), 120, np.uint8)).save(folder / name)
        project.add_image(name, width, height, "h")
    return project


def test_an_image_too_narrow_for_the_model_is_skipped_in_one_line_and_the_rest_are_proposed(
    tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture
) -> None:
    # a 1x5000 image passed 'new' before its sides were checked; resized to the model's input, its
    # short side was 0 pixels and propose stopped there with a traceback
    with _project_over(tmp_path, [("a.png", 64, 48), ("strip.png", 5000, 1), ("b.png", 64, 48)]) as project:
        arguments = ["--score-thresh", "0", "--device", "cpu", "--precision", "fp32"]  # no bf16 note on any CPU
        code = main.main(["propose", str(project.path), "--weights", str(weights), *arguments])
        out, err = capsys.readouterr()
        assert code == 0
        assert err.splitlines() == [
            (
                f"warning: {project.image_path(project.image(2))}: image is 5000x1 pixels, its "
                "sides in a ratio over 100:1, too narrow for the model; skipped"
            )
        ]
        assert "on 2 images" in out
        assert project.instances(1) and project.instances(3) and not project.instances(2)
        assert project.image(2).state == ReviewState.UNLABELED


def test_an_image_replaced_by_one_of_another_size_is_skipped_in_one_line(
    tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture
) -> None:
    with _project_over(tmp_path, [("a.png", 64, 48), ("b.png", 64, 48), ("c.png", 64, 48)]) as project:
        Image.fromarray(np.zeros((50, 70, 3), np.uint8)).save(project.image_path(project.image(1)))
        arguments = ["--score-thresh", "0", "--device", "cpu", "--precision", "fp32"]  # no bf16 note on any CPU
        code = main.main(["propose", str(project.path), "--weights", str(weights), *arguments])
        err = capsys.readouterr().err
        assert code == 0
        assert err.splitlines() == [
            (
                f"warning: {project.image_path(project.image(1))}: the image is now 70x50, "
                "the project has it as 64x48; skipped"
            )
        ]
        assert not project.instances(1) and project.instances(2) and project.instances(3)
