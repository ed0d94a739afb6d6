"""Our Mask R-CNN against torchvision's, the reference: same weights, same images, float64.

torchvision's models get calibrated random weights from a fixed seed (tests/reference.py).
"""

from __future__ import annotations

import pytest
import torch
import torchvision.models.detection as tv_detection
from torchvision.models.detection.roi_heads import heatmaps_to_keypoints as tv_heatmaps_to_keypoints
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste_masks_in_image

from model import build_model
from model.keypoint_head import heatmaps_to_keypoints
from model.transform import paste_masks_in_image
from tests.model.reference import synthetic_images, torchvision_reference

ARCHITECTURES = ["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", "keypointrcnn_resnet50_fpn"]
# small inputs and few RoIs keep float64 on two CPU cores to a few seconds per architecture
SETTINGS = {"min_size": 160, "max_size": 256, "rpn_post_nms_top_n_test": 300}
DETECTIONS = {"maskrcnn_resnet50_fpn": 12, "maskrcnn_resnet50_fpn_v2": 12, "keypointrcnn_resnet50_fpn": 6}


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_outputs_match_torchvision_in_float64(name: str) -> None:
    settings = {**SETTINGS, "box_detections_per_img": DETECTIONS[name]}
    reference = torchvision_reference(name, **settings)
    ours = build_model(name, **settings)
    ours.load_state_dict(reference.state_dict(), strict=True)
    reference, ours = reference.double(), ours.double()
    images = synthetic_images([(160, 200), (200, 240)])  # two sizes in one batch

    with torch.inference_mode():
        expected = reference(images)
        actual = ours(images)

    assert len(actual) == len(images)
    for exp, act, image in zip(expected, actual, images):
        assert set(act) == set(exp)
        assert len(exp["boxes"]) >= 3, "the reference should detect something for the test to mean anything"
        assert act["boxes"].shape == exp["boxes"].shape
        assert torch.equal(act["labels"], exp["labels"])
        torch.testing.assert_close(act["boxes"], exp["boxes"], rtol=0, atol=1e-4)
        torch.testing.assert_close(act["scores"], exp["scores"], rtol=0, atol=1e-5)
        if "masks" in exp:
            assert act["masks"].shape == (len(exp["boxes"]), 1, *image.shape[-2:])
            torch.testing.assert_close(act["masks"], exp["masks"], rtol=0, atol=1e-6)
        if "keypoints" in exp:
            # torchvision computes keypoints in float32, whatever the model's dtype
            torch.testing.assert_close(act["keypoints"], exp["keypoints"].double(), rtol=0, atol=1e-3)
            torch.testing.assert_close(act["keypoints_scores"], exp["keypoints_scores"].double(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_loads_torchvision_state_dict_with_other_class_and_keypoint_counts(name: str) -> None:
    counts = {"num_classes": 7}
    if name.startswith("keypoint"):
        counts["num_keypoints"] = 5
    reference = getattr(tv_detection, name)(weights=None, weights_backbone=None, **counts)
    ours = build_model(name, **counts)
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert ours.config.num_classes == 7
    for key, value in reference.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(ours.state_dict()[key], value), key


def test_pasted_masks_match_torchvision_paste() -> None:
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(40, 1, 28, 28, generator=generator, dtype=torch.float64)
    corners = torch.rand(40, 2, generator=generator, dtype=torch.float64) * torch.tensor([115.0, 95.0]) - 10
    sizes = torch.rand(40, 2, generator=generator, dtype=torch.float64) * 60 + 12
    boxes = torch.cat([corners, corners + sizes], dim=1)  # some cross the border
    boxes[0] = torch.tensor([5.0, 5.0, 5.0, 5.0])  # empty
    boxes[1] = torch.tensor([30.2, 40.7, 30.9, 41.1])  # under a pixel
    # (torchvision's paste fails on boxes wholly outside the image; ours gives empty masks)
    expected = tv_paste_masks_in_image(masks, boxes, (90, 110))
    actual = paste_masks_in_image(masks, boxes, (90, 110))
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunk_elements", [1 << 25, 5000])
def test_keypoint_decoding_matches_torchvision(chunk_elements: int) -> None:
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(12, 5, 56, 56, generator=generator, dtype=torch.float64)
    corners = torch.rand(12, 2, generator=generator, dtype=torch.float64) * 100
    sizes = torch.rand(12, 2, generator=generator, dtype=torch.float64) * torch.tensor([150.0, 90.0]) + 0.3
    rois = torch.cat([corners, corners + sizes], dim=1)  # smaller and larger than the 56 x 56 map
    expected_xy, expected_scores = tv_heatmaps_to_keypoints(maps, rois)
    xy, scores = heatmaps_to_keypoints(maps, rois, max_elements=chunk_elements)
    torch.testing.assert_close(xy, expected_xy.double(), rtol=0, atol=1e-4)
    torch.testing.assert_close(scores, expected_scores.double(), rtol=1e-5, atol=1e-5)
