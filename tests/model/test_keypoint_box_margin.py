"""The keypoint head reads the boxes the model detected grown by the config's
``keypoint_box_margin``: a keypoint just past a detected box's edge (where a tight box leaves a
shape's tip) can be placed there; with no margin (torchvision's) it stays inside the box, and a box a
person draws is read as drawn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from model import Predictor
from model.box_ops import grown_boxes
from model.detector import MaskRCNN
from tests.model.small import tiny_model

BOX = (40.0, 30.0, 90.0, 80.0)  # 50 x 50, in the 128 x 128 input


class LeftmostColumn(nn.Module):
    """A keypoint predictor whose heatmaps all peak in the middle of their leftmost column."""

    def __init__(self, num_keypoints: int, size: int = 56) -> None:
        super().__init__()
        self.num_keypoints, self.size = num_keypoints, size

    def forward(self, x: Tensor) -> Tensor:
        maps = torch.zeros(x.shape[0], self.num_keypoints, self.size, self.size)
        maps[:, :, self.size // 2, 0] = 10.0
        return maps


def detecting_the_proposal(margin: float) -> MaskRCNN:
    """The small model whose box head keeps each proposal as a confident class-1 detection, and whose
    keypoint heatmaps peak at their left edge."""
    model = tiny_model(keypoint_box_margin=margin).eval()
    heads = model.roi_heads
    predictor = heads.box_predictor
    with torch.no_grad():
        for layer in (predictor.cls_score, predictor.bbox_pred):
            layer.weight.zero_()
            layer.bias.zero_()
        predictor.cls_score.bias[1] = 10.0
    heads.keypoint_predictor = LeftmostColumn(model.config.num_keypoints)
    return model


def test_grown_boxes_grow_each_side_by_the_margin_of_its_size() -> None:
    boxes = torch.tensor([[10.0, 20.0, 60.0, 120.0], [0.0, 0.0, 8.0, 4.0]])
    torch.testing.assert_close(
        grown_boxes(boxes, 0.1), torch.tensor([[5.0, 10.0, 65.0, 130.0], [-0.8, -0.4, 8.8, 4.4]])
    )
    assert grown_boxes(boxes, 0.0) is boxes


@pytest.mark.parametrize("margin", [0.0, 0.08])
def test_a_keypoint_past_the_detected_box_edge_is_reached_only_with_a_margin(margin: float) -> None:
    model = detecting_the_proposal(margin)
    features = [torch.zeros(1, model.config.fpn_channels, 128 // s, 128 // s) for s in (4, 8, 16, 32)]

    found = model.roi_heads(features, [torch.tensor([BOX])], torch.tensor([[128, 128]]))

    torch.testing.assert_close(found.boxes[0], torch.tensor(BOX))  # the box itself is not grown
    x = found.keypoints[0, :, 0]
    if margin:
        # the grown box starts at 40 - 0.08 * 50 = 36 and spans 58 px: its first column's centre is 36.5
        torch.testing.assert_close(x, torch.full_like(x, 36.5))
    else:
        torch.testing.assert_close(x, torch.full_like(x, 40.5))


def test_a_box_a_person_draws_is_read_as_drawn() -> None:
    predictor = Predictor(detecting_the_proposal(0.08), device="cpu")
    image = np.full((128, 128, 3), 120, dtype=np.uint8)

    drawn = predictor.predict_in_box(image, BOX, label=1)

    assert (drawn.keypoints[0, :, 0] > BOX[0]).all() and (drawn.keypoints[0, :, 0] < BOX[0] + 1).all()
