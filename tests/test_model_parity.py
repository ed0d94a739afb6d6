"""Our Mask R-CNN against torchvision's, the reference: same weights, same images, float64.

torchvision's models get random weights from a fixed seed, with BatchNorm statistics randomised
(so that they matter) and the classifier / mask logits scaled so that scores and masks are spread
rather than saturated (ties would make the ranking of detections arbitrary on both sides).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.models.detection as tv_detection
from torchvision.models.detection.roi_heads import heatmaps_to_keypoints as tv_heatmaps_to_keypoints
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste_masks_in_image

from model import build_model
from model.roi_heads import heatmaps_to_keypoints
from model.synthetic import make_sample
from model.transform import paste_masks_in_image

ARCHITECTURES = ["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", "keypointrcnn_resnet50_fpn"]
# small inputs and few RoIs keep float64 on two CPU cores to a few seconds per architecture
SETTINGS = {"min_size": 160, "max_size": 256, "rpn_post_nms_top_n_test": 300}
DETECTIONS = {"maskrcnn_resnet50_fpn": 12, "maskrcnn_resnet50_fpn_v2": 12, "keypointrcnn_resnet50_fpn": 6}


def synthetic_images(sizes: list[tuple[int, int]], seed: int = 0) -> list[torch.Tensor]:
    """Overlapping shapes on textured backgrounds, (3, H, W) float64 in [0, 1]."""
    rng = np.random.default_rng(seed)
    images = [make_sample(rng, h, w, min_shapes=3, max_shapes=6)[0] for h, w in sizes]
    return [torch.from_numpy(im).permute(2, 0, 1).double() / 255 for im in images]


def torchvision_reference(name: str, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(0)
    reference = getattr(tv_detection, name)(weights=None, weights_backbone=None, **kwargs).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(c, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(c, generator=generator))
                module.weight.copy_(0.5 + torch.rand(c, generator=generator))
                module.bias.copy_(0.1 * torch.randn(c, generator=generator))

    heads = reference.roi_heads
    inputs: dict[str, torch.Tensor] = {}
    hooks = [heads.box_predictor.register_forward_pre_hook(lambda m, a: inputs.__setitem__("box", a[0]))]
    if heads.has_mask():
        hooks.append(heads.mask_predictor.mask_fcn_logits.register_forward_pre_hook(
            lambda m, a: inputs.__setitem__("mask", a[0])))  # fmt: skip
    with torch.inference_mode():
        reference([image.float() for image in synthetic_images([(160, 200)], seed=5)])
    for hook in hooks:
        hook.remove()

    def rescale(layer: torch.nn.Module, features: torch.Tensor, std: float) -> None:
        rms = float(features.pow(2).mean().sqrt())
        with torch.no_grad():
            layer.weight.normal_(0, std / (rms * features.shape[1] ** 0.5), generator=generator)
            layer.bias.zero_()

    rescale(heads.box_predictor.cls_score, inputs["box"], 2.0)
    rescale(heads.box_predictor.bbox_pred, inputs["box"], 1.0)
    if "mask" in inputs:
        rescale(heads.mask_predictor.mask_fcn_logits, inputs["mask"], 3.0)
    return reference


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
            torch.testing.assert_close(
                act["keypoints_scores"], exp["keypoints_scores"].double(), rtol=1e-5, atol=1e-4
            )


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
