"""The COCO mask network and keypoint network run as one predictor (``model.person_pose``): the
matching and the joining on constructed boxes, and both networks on random weights of
torchvision's layouts (small images, CPU), the registry entry downloaded from file:// URLs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.models.detection as tv_detection

from annotator.proposals import to_proposals
from model import Instances, PredictionCancelled, Predictor, build_model
from model.box_ops import pairwise_iou
from model.cli import load_predictor
from model.config import COCO_CATEGORY_NAMES
from model.person_pose import MATCH_IOU, PersonPosePredictor, join_people, match_people
from model.synthetic import make_sample
from model.weights.registry import COMBINED, REGISTRY, CombinedWeightsInfo, registry_files
from model.weights.summary import what_it_knows
from tests.files import published_like

# small inputs, every detection kept, few proposals: the 91-class NMS stays cheap on a CPU
SMALL = {
    "min_size": 160,
    "max_size": 256,
    "box_score_thresh": 0.0,
    "rpn_pre_nms_top_n_test": 200,
    "rpn_post_nms_top_n_test": 50,
}
PERSON = COCO_CATEGORY_NAMES.index("person")
CAR = COCO_CATEGORY_NAMES.index("car")
SIZE = (120, 160)  # (height, width) of the constructed images


def constructed(
    boxes: list[list[float]], scores: list[float], labels: list[int], keypoints: torch.Tensor | None = None
) -> Instances:
    """Instances of a constructed image: each mask fills its box."""
    masks = torch.zeros(len(boxes), *SIZE, dtype=torch.bool)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes, strict=True):
        mask[int(y1) : int(y2), int(x1) : int(x2)] = True
    return Instances(
        image_size=SIZE,
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        scores=torch.tensor(scores),
        labels=torch.tensor(labels, dtype=torch.int64),
        label_names=[COCO_CATEGORY_NAMES[i] for i in labels],
        masks=masks if keypoints is None else None,
        keypoints=keypoints,
        keypoint_scores=None if keypoints is None else keypoints[..., 0] / 100,
        model_version="mask@1",
    )


def pose_in(box: list[float], num_keypoints: int = 17) -> torch.Tensor:
    """(K, 3) keypoints spread over ``box``, v = 1, each pose told apart by where it lies."""
    x1, y1, x2, y2 = box
    t = torch.linspace(0, 1, num_keypoints)
    return torch.stack([x1 + t * (x2 - x1), y1 + t * (y2 - y1), torch.ones(num_keypoints)], dim=1)


# -- matching on constructed boxes --------------------------------------------------------------


def test_two_people_close_together_each_take_the_keypoint_box_of_their_own() -> None:
    # side by side, overlapping; the keypoint network lists them in the other order
    mask_boxes = torch.tensor([[10.0, 10, 60, 110], [45, 12, 95, 112]])
    keypoint_boxes = torch.tensor([[47.0, 10, 97, 110], [12, 14, 62, 110]])
    assert match_people(mask_boxes, keypoint_boxes) == [(0, 1), (1, 0)]


def test_a_keypoint_box_overlapping_two_people_goes_to_the_one_it_overlaps_most() -> None:
    # keypoint box 0 overlaps both mask people above the threshold, person 1 the more; keypoint box
    # 1 is person 0's own: taking the highest IoU first pairs each with its own
    mask_boxes = torch.tensor([[0.0, 0, 100, 100], [30, 0, 130, 100]])
    keypoint_boxes = torch.tensor([[25.0, 0, 125, 100], [2, 0, 102, 100]])
    iou = pairwise_iou(mask_boxes, keypoint_boxes)
    assert iou[0, 0] > MATCH_IOU and iou[1, 0] > iou[0, 0]
    assert match_people(mask_boxes, keypoint_boxes) == [(0, 1), (1, 0)]


def test_boxes_overlapping_less_than_the_threshold_stay_unmatched() -> None:
    mask_boxes = torch.tensor([[0.0, 0, 100, 100], [200, 0, 300, 100]])
    keypoint_boxes = torch.tensor([[0.0, 0, 100, 45], [205, 0, 300, 100]])  # IoU 0.45 and 0.95
    assert match_people(mask_boxes, keypoint_boxes) == [(1, 1)]
    assert match_people(mask_boxes, keypoint_boxes[:0]) == []
    assert match_people(mask_boxes[:0], keypoint_boxes) == []


# -- joining constructed detections -------------------------------------------------------------


def test_join_keeps_every_detection_and_gives_each_person_a_mask_and_keypoints() -> None:
    matched, car, mask_only = [10.0, 10, 50, 100], [70, 60, 150, 110], [100, 5, 130, 55]
    keypoint_only, matched_too = [60.0, 5, 90, 58], [12.0, 8, 52, 98]
    found = constructed([matched, car, mask_only], [0.9, 0.8, 0.7], [PERSON, CAR, PERSON])
    people_keypoints = torch.stack([pose_in(matched_too), pose_in(keypoint_only)])
    people = constructed([matched_too, keypoint_only], [0.95, 0.6], [1, 1], keypoints=people_keypoints)
    segmented, posed = [], []

    def masks_in_boxes(boxes: torch.Tensor) -> torch.Tensor:
        segmented.append(boxes.tolist())
        masks = torch.zeros(len(boxes), *SIZE, dtype=torch.bool)
        masks[:, :3, :3] = True
        return masks

    def keypoints_in_boxes(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posed.append(boxes.tolist())
        return torch.stack([pose_in(box) for box in boxes.tolist()]), torch.full((len(boxes), 17), 7.0)

    joined = join_people(
        found,
        people,
        person="person",
        person_label=PERSON,
        num_keypoints=17,
        masks_in_boxes=masks_in_boxes,
        keypoints_in_boxes=keypoints_in_boxes,
    )

    assert joined.label_names == ["person", "car", "person", "person"]  # best first
    assert joined.scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])
    assert joined.boxes.tolist() == [matched, car, mask_only, keypoint_only]
    assert joined.labels.tolist() == [PERSON, CAR, PERSON, PERSON]
    assert joined.masks is not None and joined.keypoints is not None and joined.keypoint_scores is not None
    assert torch.equal(joined.masks[:3], found.masks)  # the mask network's, as they were
    # the matched person: the keypoint network's pose of the same person
    assert torch.equal(joined.keypoints[0], pose_in(matched_too))
    assert torch.equal(joined.keypoint_scores[0], people.keypoint_scores[0])
    # not a person: no keypoints
    assert not joined.keypoints[1, :, 2].any()
    # the mask-only person: the keypoint head on its box
    assert posed == [[mask_only]]  # one call for all such people
    assert torch.equal(joined.keypoints[2], pose_in(mask_only)) and (joined.keypoint_scores[2] == 7).all()
    # the keypoint-only person: its pose, and the mask head on its box
    assert segmented == [[keypoint_only]]
    assert torch.equal(joined.keypoints[3], pose_in(keypoint_only))
    assert joined.masks[3].sum() == 9
    assert joined.model_version == "mask@1"


def test_join_runs_no_head_again_when_both_networks_found_the_same_people() -> None:
    found = constructed([[10.0, 10, 50, 100], [70, 60, 150, 110]], [0.9, 0.8], [PERSON, CAR])
    people = constructed([[12.0, 8, 52, 98]], [0.95], [1], keypoints=pose_in([12, 8, 52, 98])[None])

    def never(boxes: torch.Tensor) -> torch.Tensor:
        raise AssertionError("a head ran again")

    joined = join_people(
        found,
        people,
        person="person",
        person_label=PERSON,
        num_keypoints=17,
        masks_in_boxes=never,
        keypoints_in_boxes=never,  # type: ignore[arg-type]
    )

    assert joined.label_names == ["person", "car"] and torch.equal(joined.boxes, found.boxes)
    assert joined.keypoints is not None and torch.equal(joined.keypoints[0], pose_in([12, 8, 52, 98]))


def test_proposals_of_a_joined_prediction_give_keypoints_to_persons_only() -> None:
    found = constructed([[10.0, 10, 50, 100], [70, 60, 150, 110]], [0.9, 0.8], [PERSON, CAR])
    people = constructed([[12.0, 8, 52, 98]], [0.95], [1], keypoints=pose_in([12, 8, 52, 98])[None])
    joined = join_people(
        found,
        people,
        person="person",
        person_label=PERSON,
        num_keypoints=17,
        masks_in_boxes=lambda boxes: torch.zeros(len(boxes), *SIZE, dtype=torch.bool),
        keypoints_in_boxes=lambda boxes: (torch.zeros(len(boxes), 17, 3), torch.zeros(len(boxes), 17)),
    )

    person, car = to_proposals(joined)

    assert person.keypoints is not None and person.keypoints.shape == (17, 3) and (person.keypoints[:, 2] == 2).all()
    assert car.label_name == "car" and car.keypoints is None


# -- both networks on random weights ------------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return make_sample(np.random.default_rng(0), 128, 192, min_shapes=3, max_shapes=5)[0]


@pytest.fixture(scope="module")
def networks(image: np.ndarray) -> PersonPosePredictor:
    """A v1 mask network and a keypoint network with torchvision's random initialisation, made to
    find some people both, some people only one of them. They share the backbone, the RPN, the box
    head and the person's classifier and box regression, so a person both find has the same box;
    the keypoint network keeps more people (up to 20 against 8 instances of any class), but only
    those it scores above the midpoint between its scores of two people the mask network found.
    The class logits are centred on the image's RoI features, so that classes vary from RoI to
    RoI as a trained model's do rather than one class winning everywhere."""
    torch.manual_seed(0)
    masks = tv_detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    keypoints = tv_detection.keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    for key in keypoints:
        if key.startswith(("backbone.", "rpn.", "roi_heads.box_head.")):
            keypoints[key] = masks[key]
    mask_model = build_model("maskrcnn_resnet50_fpn", box_detections_per_img=8, **SMALL)
    mask_model.load_state_dict(masks)
    seen: dict[str, torch.Tensor] = {}
    hook = mask_model.roi_heads.box_predictor.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    with torch.inference_mode():
        mask_model([torch.from_numpy(image).permute(2, 0, 1).float() / 255])
    hook.remove()
    weight = 0.1 * torch.randn(91, 1024, generator=torch.Generator().manual_seed(0))
    bias = -weight @ seen["x"].mean(0) + torch.eye(91)[PERSON] * 2  # person more often than others
    masks["roi_heads.box_predictor.cls_score.weight"], masks["roi_heads.box_predictor.cls_score.bias"] = weight, bias
    keypoints["roi_heads.box_predictor.cls_score.weight"] = weight[[0, PERSON]]
    keypoints["roi_heads.box_predictor.cls_score.bias"] = bias[[0, PERSON]]
    for part in ("weight", "bias"):  # rows 4..7: the person's box regression
        keypoints[f"roi_heads.box_predictor.bbox_pred.{part}"] = masks[f"roi_heads.box_predictor.bbox_pred.{part}"][:8]
    mask_model.load_state_dict(masks)
    keypoint_model = build_model("keypointrcnn_resnet50_fpn", box_detections_per_img=20, **SMALL)
    keypoint_model.load_state_dict(keypoints)
    networks = PersonPosePredictor(
        Predictor(mask_model, device="cpu", precision="fp32"),
        Predictor(keypoint_model, device="cpu", precision="fp32"),
    )
    found, people = networks.masks.predict(image), networks.keypoints.predict(image)
    persons = [i for i, name in enumerate(found.label_names) if name == "person"]
    both = sorted(float(people.scores[j]) for _, j in match_people(found.boxes[persons], people.boxes))
    assert len(both) >= 2, f"the networks find {len(both)} people both on this image, the test needs two"
    networks.keypoints.score_threshold = (both[0] + both[1]) / 2
    return networks


def test_combined_output_equals_each_networks_own_output_on_the_parts_it_contributes(networks, image) -> None:
    networks.clear_cache()
    joined = networks.predict(image)
    found = networks.masks.predict(image)
    people = networks.keypoints.predict(image)
    assert joined.masks is not None and found.masks is not None
    assert joined.keypoints is not None and people.keypoints is not None and people.keypoint_scores is not None

    # every detection of the mask network, unchanged
    mine = [
        next(r for r in range(len(joined)) if torch.equal(joined.boxes[r], found.boxes[i])) for i in range(len(found))
    ]
    assert torch.equal(joined.scores[mine], found.scores) and torch.equal(joined.labels[mine], found.labels)
    assert torch.equal(joined.masks[mine], found.masks)
    # every person of the keypoint network once: its pose on the mask network's person it
    # overlaps, or a person of its own with its box and score
    matched, keypoint_only = [], []
    for j in range(len(people)):
        rows = [r for r in range(len(joined)) if torch.equal(joined.keypoints[r], people.keypoints[j])]
        assert len(rows) == 1, f"keypoint person {j} is in {len(rows)} instances"
        row = rows[0]
        assert joined.label_names[row] == "person"
        assert torch.equal(joined.keypoint_scores[row], people.keypoint_scores[j])
        if row in mine:
            assert float(pairwise_iou(joined.boxes[row : row + 1], people.boxes[j : j + 1])) >= MATCH_IOU
            matched.append(row)
        else:
            assert torch.equal(joined.boxes[row], people.boxes[j]) and joined.scores[row] == people.scores[j]
            keypoint_only.append(row)
    assert len(joined) == len(found) + len(keypoint_only)
    # the keypoint-only people: masks of the mask head on their boxes (one batch, in the
    # keypoint network's order)
    keypoint_only.sort(key=lambda r: float(joined.scores[r]), reverse=True)
    segmented = networks.masks.predict_in_boxes(image, joined.boxes[keypoint_only], "person").masks
    assert segmented is not None and torch.equal(joined.masks[keypoint_only], segmented)
    # the mask-only people: keypoints of the keypoint head on their boxes; the rest none
    mask_only = [r for r in mine if r not in matched and joined.label_names[r] == "person"]
    posed = networks.keypoints.predict_in_boxes(image, joined.boxes[mask_only], "person")
    assert posed.keypoints is not None and torch.equal(joined.keypoints[mask_only], posed.keypoints)
    others = [r for r in mine if joined.label_names[r] != "person"]
    assert not joined.keypoints[others, :, 2].any()
    assert matched and keypoint_only and mask_only and others, "the constructed networks no longer give every case"
    assert (joined.scores[:-1] >= joined.scores[1:]).all()


def count_backbone_calls(predictor: Predictor) -> list[int]:
    calls = [0]
    backbone = predictor.model.backbone
    original = backbone.forward

    def counted(x: torch.Tensor) -> list[torch.Tensor]:
        calls[0] += 1
        return original(x)

    backbone.forward = counted  # type: ignore[method-assign]
    return calls


def test_each_backbone_runs_once_per_image_for_proposals_and_box_prompts(networks, image) -> None:
    networks.clear_cache()
    calls = [count_backbone_calls(networks.masks), count_backbone_calls(networks.keypoints)]
    try:
        joined = networks.predict(image)
        networks.predict_in_box(image, joined.boxes[0].tolist(), "person")
        networks.predict_in_box(image, (20, 10, 90, 120))
        assert [c[0] for c in calls] == [1, 1]
    finally:
        del networks.masks.model.backbone.forward, networks.keypoints.model.backbone.forward


def test_a_prepared_image_answers_a_person_box_with_the_heads_of_both_networks_alone(networks, image) -> None:
    networks.clear_cache()
    calls = [count_backbone_calls(networks.masks), count_backbone_calls(networks.keypoints)]
    try:
        networks.prepare(image)  # what the app does as the image opens
        person = networks.predict_in_box(image, (20.0, 10.0, 90.0, 120.0), "person")
        assert [c[0] for c in calls] == [1, 1] and person.keypoints is not None
    finally:
        del networks.masks.model.backbone.forward, networks.keypoints.model.backbone.forward


def test_a_person_box_gets_a_mask_and_keypoints_and_another_box_only_a_mask(networks, image) -> None:
    box = (20.0, 10.0, 90.0, 120.0)
    person = networks.predict_in_box(image, box, "person")
    alone = networks.masks.predict_in_box(image, box, "person")
    pose = networks.keypoints.predict_in_box(image, box, "person")
    assert person.label_names == ["person"] and person.masks is not None and alone.masks is not None
    assert torch.equal(person.masks, alone.masks) and person.scores == alone.scores
    assert person.keypoints is not None and pose.keypoints is not None
    assert torch.equal(person.keypoints, pose.keypoints)
    assert person.model_version == networks.model_version

    cat = networks.predict_in_box(image, box, "cat")  # a category neither network knows
    assert cat.label_names == ["cat"] and cat.masks is not None and cat.keypoints is None
    car = networks.predict_in_box(image, box, "car")
    assert car.keypoints is None
    assert networks.has_keypoints("person") and networks.has_keypoints(PERSON)
    assert not networks.has_keypoints("car") and not networks.has_keypoints(CAR) and not networks.has_keypoints(0)


def test_predict_in_boxes_gives_the_heads_output_of_predict_in_box_for_that_class_and_keeps_the_boxes(
    networks, image
) -> None:
    inside, across_the_edge = [20.0, 10.0, 90.0, 120.0], [150.0, -20.0, 230.0, 60.0]  # the image is 192 x 128
    for box, kept in ((inside, inside), (across_the_edge, [150.0, 0.0, 192.0, 60.0])):
        boxes = torch.tensor([box])
        segmented = networks.masks.predict_in_boxes(image, boxes, "person")
        drawn = networks.masks.predict_in_box(image, box, "person")
        assert segmented.masks is not None and drawn.masks is not None
        assert torch.equal(segmented.masks, drawn.masks) and segmented.label_names == ["person"]
        assert segmented.boxes.tolist() == [kept] and segmented.scores.tolist() == [1.0]
        posed = networks.keypoints.predict_in_boxes(image, boxes, "person")
        pose = networks.keypoints.predict_in_box(image, box, "person")
        assert posed.keypoints is not None and pose.keypoints is not None
        assert torch.equal(posed.keypoints, pose.keypoints)
    assert len(networks.masks.predict_in_boxes(image, torch.zeros(0, 4), "person")) == 0


def test_cancel_between_the_two_networks_stops_the_prediction_and_the_next_one_runs(networks, image) -> None:
    own_predict = networks.masks.predict

    def predict_then_cancelled(*args, **kwargs) -> Instances:
        found = own_predict(*args, **kwargs)
        networks.cancel()  # the user's Cancel, while the keypoint network is about to start
        return found

    networks.masks.predict = predict_then_cancelled  # type: ignore[method-assign]
    try:
        with pytest.raises(PredictionCancelled):
            networks.predict(image)
    finally:
        del networks.masks.predict
    assert len(networks.predict(image)) > 0


# -- the registry entry -------------------------------------------------------------------------


def test_combined_registry_entry_pairs_the_v2_mask_file_with_the_keypoint_file() -> None:
    name = "masks_and_keypoints_resnet50_fpn.COCO_V1"
    entry = COMBINED[name]
    assert registry_files(name) == (
        REGISTRY["maskrcnn_resnet50_fpn_v2.COCO_V1"],
        REGISTRY["keypointrcnn_resnet50_fpn.COCO_V1"],
    )
    assert registry_files("maskrcnn_resnet50_fpn.COCO_V1") == (REGISTRY["maskrcnn_resnet50_fpn.COCO_V1"],)
    assert registry_files("no such weights") == ()
    assert entry.file_size_mb == pytest.approx(177.219 + 226.054)
    assert what_it_knows(name).startswith("COCO; knows 80 classes: person, bicycle")
    assert what_it_knows(name).endswith("; 17 keypoints for each person")


def test_combined_entry_downloads_both_files_from_file_urls_and_proposes_as_one_predictor(
    hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, image: np.ndarray
) -> None:
    torch.manual_seed(0)
    files = []  # the registry's two files, served from file:// URLs
    for info in COMBINED["masks_and_keypoints_resnet50_fpn.COCO_V1"].files:
        state = getattr(tv_detection, info.architecture)(weights=None, weights_backbone=None).state_dict()
        source, digest = published_like(state, tmp_path / "server", info.filename.rpartition("-")[0])
        files.append(
            dataclasses.replace(info, name=f"{info.architecture}.TEST", url=source.as_uri(), sha256_prefix=digest[:8])
        )
    entry = CombinedWeightsInfo(name="masks_and_keypoints.TEST", masks=files[0], keypoints=files[1])
    monkeypatch.setitem(COMBINED, entry.name, entry)

    # as main.py propose and evaluate load it (evaluate asks for no feature cache)
    predictor = load_predictor(
        entry.name, "cpu", precision="fp32", progress=False, feature_cache_size=0, box_detections_per_img=10, **SMALL
    )

    assert isinstance(predictor, PersonPosePredictor)
    assert sorted(p.name for p in hub.iterdir()) == sorted(Path(f.url).name for f in files)  # nothing partial
    hashes = "+".join(f.sha256_prefix for f in files)
    assert predictor.model_version == f"masks_and_keypoints.TEST@{hashes}"
    assert predictor.class_names == COCO_CATEGORY_NAMES and len(predictor.keypoint_names) == 17
    assert predictor.model.config.mask_on and predictor.execution == "cpu · fp32"
    found = predictor.predict(image)
    assert found.masks is not None and found.masks.shape[1:] == image.shape[:2]
    assert found.keypoints is not None and found.keypoints.shape == (len(found), 17, 3)
    assert found.model_version == predictor.model_version
    is_person = torch.tensor([name == "person" for name in found.label_names], dtype=torch.bool)
    assert torch.equal(found.keypoints[:, :, 2].all(1), is_person)
