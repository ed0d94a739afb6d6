"""Training data: COCO files read for training (polygons, RLE, crowd regions, degenerate boxes),
flips, keypoint flip maps, and the data order."""

from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_utils

from model.data import CocoDataset, TrainingBatches, held_out_count, infer_flip_map, load_coco
from model.rpn import label_anchors
from tests.model.small import square_coco

# -- data ----------------------------------------------------------------------------------------


def test_dataset_reads_polygons_and_both_kinds_of_rle_with_contiguous_labels(tmp_path):
    square = np.zeros((30, 40), np.uint8)
    square[5:15, 10:30] = 1
    compressed = mask_utils.encode(np.asfortranarray(square))
    runs, value, count = [], 0, 0
    for pixel in square.flatten(order="F"):
        if pixel != value:
            runs.append(count)
            value, count = pixel, 0
        count += 1
    runs.append(count)
    coco = square_coco(
        tmp_path,
        [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 7,
                "bbox": [10, 5, 20, 10],
                "segmentation": [[10, 5, 30, 5, 30, 15, 10, 15]],
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 3,
                "bbox": [10, 5, 20, 10],
                "segmentation": {"size": [30, 40], "counts": compressed["counts"].decode()},
            },
            {
                "id": 3,
                "image_id": 1,
                "category_id": 7,
                "bbox": [10, 5, 20, 10],
                "segmentation": {"size": [30, 40], "counts": runs},
            },
        ],
    )
    data = load_coco(coco, tmp_path / "images")
    assert data.labels.class_names == ("__background__", "other", "thing")  # categories in id order
    _, target = CocoDataset(data)[0]
    assert target["labels"].tolist() == [2, 1, 2]
    assert target["boxes"].tolist() == [[10, 5, 30, 15]] * 3
    for mask in target["masks"]:
        assert np.array_equal(mask.numpy(), square)


def test_images_without_annotations_stay_as_negatives(tmp_path):
    coco = square_coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5]}], images=3)
    dataset = CocoDataset(load_coco(coco, tmp_path / "images"))
    assert len(dataset) == 3
    image, target = dataset[2]
    assert image.shape == (3, 30, 40)
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 30, 40)


def test_held_out_count_is_what_split_holds_out_and_never_every_image(tmp_path):
    data = load_coco(square_coco(tmp_path, [], images=5), tmp_path / "images")
    for images in range(1, 6):
        subset = data.subset(sorted(data.image_ids)[:images])
        for fraction in (0.0, 0.1, 0.2, 0.5, 0.9):
            _, held_out = subset.split(fraction)
            assert len(held_out.image_ids) == held_out_count(images, fraction), (images, fraction)
    assert [held_out_count(n, 0.1) for n in (1, 2, 3, 20)] == [0, 1, 1, 2]  # rounding alone gives 0, 0, 0, 2
    assert held_out_count(5, 0.9) == 4


def test_crowd_regions_are_not_ground_truth_but_crowd_boxes(tmp_path):
    coco = square_coco(
        tmp_path,
        [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [20, 10, 15, 12], "iscrowd": 1},
        ],
    )
    _, target = CocoDataset(load_coco(coco, tmp_path / "images"))[0]
    assert target["boxes"].tolist() == [[1, 1, 6, 6]]
    assert target["crowd_boxes"].tolist() == [[20, 10, 35, 22]]


def test_crowd_regions_keep_anchors_out_of_the_negatives():
    anchors = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [52, 52, 58, 58], [100, 100, 110, 110]])
    gt = torch.tensor([[0.0, 0, 10, 10]])
    crowd = torch.tensor([[45.0, 45, 65, 65]])
    labels, _ = label_anchors(anchors, [gt], [crowd], 0.7, 0.3, 256, 0.5)
    assert labels[0].tolist() == [1, -1, -1, 0]


def test_degenerate_boxes_are_dropped_with_one_warning_naming_them(tmp_path):
    coco = square_coco(
        tmp_path,
        [
            {"id": 11, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5]},
            {"id": 12, "image_id": 1, "category_id": 7, "bbox": [3, 3, 0, 5]},
            {"id": 13, "image_id": 2, "category_id": 3, "bbox": [3, 3, 4, 0.2]},
            {"id": 14, "image_id": 2, "category_id": 3, "bbox": [45, 3, 4, 4]},  # outside the image
        ],
    )
    data = load_coco(coco, tmp_path / "images")
    assert [len(record.boxes) for record in data.images] == [1, 0]
    assert len(data.warnings) == 1
    assert "12, 13, 14" in data.warnings[0] and "11" not in data.warnings[0].split("id ")[-1]


def test_horizontal_flip_mirrors_pixels_masks_boxes_and_swaps_left_and_right(tmp_path):
    coco = square_coco(
        tmp_path,
        [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 7,
                "bbox": [10, 5, 20, 10],
                "segmentation": [[10, 5, 30, 5, 30, 15, 10, 15]],
                "keypoints": [12.5, 6.5, 2, 28.0, 14.0, 2, 20, 10, 1, 0, 0, 0],
            },
        ],
        keypoints=["left_hand", "right_hand", "nose", "left_foot"],
    )
    dataset = CocoDataset(load_coco(coco, tmp_path / "images"))
    image, target = dataset[0]
    flipped, mirrored = dataset[(0, True)]
    assert torch.equal(flipped, image.flip(-1))
    assert torch.equal(mirrored["masks"], target["masks"].flip(-1))
    assert mirrored["boxes"].tolist() == [[10, 5, 30, 15]]  # a centred box stays put
    # x -> 40 - x, and the left hand takes the right hand's place; unlabelled keypoints stay (0, 0, 0)
    assert mirrored["keypoints"][0].tolist() == [[12.0, 14.0, 2], [27.5, 6.5, 2], [20, 10, 1], [0, 0, 0]]


def test_flip_map_pairs_keypoint_names_that_differ_by_left_and_right():
    assert infer_flip_map(["nose", "left_eye", "right_eye", "l_knee", "r_knee", "left", "right"]) == (
        ("left_eye", "right_eye"),
        ("l_knee", "r_knee"),
        ("left", "right"),
    )


def test_training_batches_are_a_function_of_seed_and_iteration():
    stream = iter(TrainingBatches(10, 3, seed=5))
    batches = [next(stream) for _ in range(7)]
    resumed = iter(TrainingBatches(10, 3, seed=5, start_iteration=4))
    assert [next(resumed) for _ in range(3)] == batches[4:]
    # an epoch visits every image once; two ranks split each step's images
    first_epoch = [i for batch in batches for i, _ in batch][:10]
    assert sorted(first_epoch) == list(range(10))
    ranks = [iter(TrainingBatches(10, 3, seed=5, rank=r, world_size=2)) for r in range(2)]
    assert next(ranks[0]) + next(ranks[1]) == batches[0] + batches[1]


# -- losses --------------------------------------------------------------------------------------
