"""The box head's NMS on a prefix of the candidates (``best_after_nms``) gives exactly what NMS on
all of them, then the best ``k`` per image, gives."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import batched_nms

from model.box_ops import FIRST_PREFIX_PER_DETECTION, best_after_nms, top_per_image


def candidates(num: int, num_images: int, num_classes: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Boxes clustered round a few centres (so NMS suppresses many), with classes and images."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(12, 2, generator=generator) * 400
    which = torch.randint(0, 12, (num,), generator=generator)
    xy = centres[which] + torch.randn(num, 2, generator=generator) * 6
    wh = 30 + torch.rand(num, 2, generator=generator) * 20
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(num, generator=generator)
    labels = torch.randint(1, num_classes + 1, (num,), generator=generator)
    image = torch.randint(0, num_images, (num,), generator=generator)
    return boxes, scores, image * (num_classes + 1) + labels, image


def everything_then_best(boxes, scores, groups, image, num_images, k):
    return top_per_image(batched_nms(boxes, scores, groups, 0.5), image, num_images, k)


@pytest.mark.parametrize(
    ("num", "num_images", "num_classes", "k"),
    [
        (20000, 1, 3, 100),  # few classes round few centres: most of the first prefix is suppressed
        (20000, 2, 90, 100),
        (5000, 3, 90, 7),
        (300, 2, 5, 100),  # fewer candidates than the first prefix: NMS on all at once
    ],
)
def test_nms_on_a_prefix_keeps_exactly_the_best_that_nms_on_all_keeps(num, num_images, num_classes, k) -> None:
    for seed in range(3):
        boxes, scores, groups, image = candidates(num, num_images, num_classes, seed)
        keep, counts = best_after_nms(boxes, scores, groups, 0.5, image, num_images, k)
        expected, expected_counts = everything_then_best(boxes, scores, groups, image, num_images, k)
        assert counts == expected_counts
        assert torch.equal(keep, expected)


def test_the_prefix_grows_while_its_best_candidates_suppress_each_other(monkeypatch) -> None:
    boxes, scores, groups, image = candidates(20000, 1, 3, 0)
    boxes[:3000] = torch.tensor([100.0, 100.0, 140.0, 150.0])  # the 3000 best: one object, said again
    scores[:3000] = 1 + torch.rand(3000)
    sizes = []

    def counting_nms(boxes, *args):
        sizes.append(boxes.shape[0])
        return batched_nms(boxes, *args)

    monkeypatch.setattr("model.box_ops.batched_nms", counting_nms)
    keep, counts = best_after_nms(boxes, scores, groups, 0.5, image, 1, 100)
    monkeypatch.undo()
    expected, expected_counts = everything_then_best(boxes, scores, groups, image, 1, 100)
    assert counts == expected_counts == [100] and torch.equal(keep, expected)
    assert sizes == [1000, 4000]  # grown once, and stopped well short of all 20000


def test_an_image_with_fewer_candidates_than_wanted_keeps_them_all_after_nms() -> None:
    boxes, scores, groups, image = candidates(3000, 2, 90, 0)
    image[image == 1] = 0
    image[:5] = 1  # image 1 has five candidates, far fewer than k
    groups = image * 91 + groups % 91
    k = FIRST_PREFIX_PER_DETECTION
    keep, counts = best_after_nms(boxes, scores, groups, 0.5, image, 2, k)
    expected, expected_counts = everything_then_best(boxes, scores, groups, image, 2, k)
    assert counts == expected_counts and counts[1] <= 5
    assert torch.equal(keep, expected)


def test_candidates_tied_at_the_prefix_boundary_come_in_together() -> None:
    boxes, scores, groups, image = candidates(4000, 1, 2, 1)
    scores[:] = 0.5  # every score tied: the prefix is all of them
    scores[:10] = 0.9
    keep, counts = best_after_nms(boxes, scores, groups, 0.5, image, 1, 100)
    expected, expected_counts = everything_then_best(boxes, scores, groups, image, 1, 100)
    assert counts == expected_counts
    assert torch.equal(scores[keep], scores[expected]) and torch.equal(groups[keep], groups[expected])
