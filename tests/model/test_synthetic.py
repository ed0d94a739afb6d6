"""Tests for model.synthetic: the COCO files it writes and the samples it renders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from model import synthetic

REPO_ROOT = Path(__file__).resolve().parents[2]
K = synthetic.NUM_KEYPOINTS
KEYPOINT_INDEX = {name: k for k, name in enumerate(synthetic.KEYPOINT_NAMES)}
NUM_IMAGES = 24

Sample = tuple[np.ndarray, list[synthetic.SyntheticInstance]]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, COCO]:
    out_dir = tmp_path_factory.mktemp("synthetic")
    annotation_file = synthetic.generate(out_dir, NUM_IMAGES, seed=7)
    assert annotation_file == out_dir / "annotations.json"
    return out_dir, COCO(str(annotation_file))


@pytest.fixture(scope="module")
def coco(written: tuple[Path, COCO]) -> COCO:
    return written[1]


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    return [synthetic.make_sample(np.random.default_rng([3, n]), 200, 260) for n in range(30)]


def decode(ann: dict) -> np.ndarray:
    return mask_utils.decode(ann["segmentation"]).astype(bool)


def keypoint_array(ann: dict) -> np.ndarray:
    return np.asarray(ann["keypoints"], np.float64).reshape(K, 3)


def image_annotations(coco: COCO, image_id: int) -> list[dict]:
    return coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))


def test_annotation_file_loads_with_pycocotools_and_lists_every_image(coco: COCO) -> None:
    assert sorted(coco.getImgIds()) == list(range(1, NUM_IMAGES + 1))
    ann_ids = sorted(coco.getAnnIds())
    assert ann_ids == list(range(1, len(ann_ids) + 1))
    assert len(ann_ids) >= 2 * NUM_IMAGES
    for ann in coco.loadAnns(ann_ids):
        assert ann["iscrowd"] == 0
        assert isinstance(ann["segmentation"]["counts"], str)
        assert ann["category_id"] in coco.cats


def test_categories_share_one_keypoint_schema_with_a_valid_skeleton(coco: COCO) -> None:
    categories = coco.loadCats(sorted(coco.getCatIds()))
    assert [c["id"] for c in categories] == [1, 2, 3, 4]
    assert [c["name"] for c in categories] == list(synthetic.CATEGORY_NAMES)
    for category in categories:
        assert category["supercategory"] == "shape"
        assert category["keypoints"] == list(synthetic.KEYPOINT_NAMES)
        assert all(1 <= a <= K and 1 <= b <= K and a != b for a, b in category["skeleton"])
    for left, right in synthetic.FLIP_MAP:
        assert left in synthetic.KEYPOINT_NAMES and right in synthetic.KEYPOINT_NAMES


def test_image_files_exist_with_the_recorded_size(written: tuple[Path, COCO]) -> None:
    out_dir, coco = written
    for info in coco.loadImgs(coco.getImgIds()):
        image = cv2.imread(str(out_dir / "images" / info["file_name"]))
        assert image is not None, info["file_name"]
        assert image.shape == (info["height"], info["width"], 3)


def test_masks_decode_to_image_size_and_do_not_overlap_within_an_image(coco: COCO) -> None:
    for image_id in coco.getImgIds():
        info = coco.imgs[image_id]
        masks = [decode(ann) for ann in image_annotations(coco, image_id)]
        assert all(m.shape == (info["height"], info["width"]) for m in masks)
        coverage = np.sum(masks, axis=0)
        assert coverage.max() <= 1, f"image {image_id}: instance masks overlap"


def test_area_and_bbox_agree_with_the_mask(coco: COCO) -> None:
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = decode(ann)
        rows, cols = np.nonzero(mask)
        assert ann["area"] == mask.sum()
        x, y = cols.min(), rows.min()
        assert ann["bbox"] == [x, y, cols.max() + 1 - x, rows.max() + 1 - y]


def test_instances_below_the_minimum_visible_area_are_dropped(coco: COCO) -> None:
    assert min(ann["area"] for ann in coco.loadAnns(coco.getAnnIds())) >= 30


def test_keypoint_visibility_matches_the_instance_mask(coco: COCO) -> None:
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = decode(ann)
        height, width = mask.shape
        points = keypoint_array(ann)
        assert ann["num_keypoints"] == np.count_nonzero(points[:, 2])
        for x, y, v in points:
            if v == 0:
                assert (x, y) == (0, 0)
                continue
            assert 0 <= x < width and 0 <= y < height
            on_mask = mask[int(y), int(x)]
            assert on_mask if v == 2 else not on_mask, (ann["id"], x, y, v)


def test_keypoints_are_labelled_occluded_or_outside_somewhere(coco: COCO) -> None:
    # shapes overlap and cross the border often enough that a couple of dozen images show both
    visibility = np.concatenate([keypoint_array(a)[:, 2] for a in coco.loadAnns(coco.getAnnIds())])
    assert {0, 1, 2} <= set(visibility.tolist())


def test_some_instances_touch_the_image_border(coco: COCO) -> None:
    def touches(ann: dict) -> bool:
        x, y, w, h = ann["bbox"]
        info = coco.imgs[ann["image_id"]]
        return x == 0 or y == 0 or x + w == info["width"] or y + h == info["height"]

    assert any(touches(ann) for ann in coco.loadAnns(coco.getAnnIds()))


def test_every_category_appears_within_a_dozen_images(tmp_path: Path) -> None:
    dataset = json.loads(synthetic.generate(tmp_path, 12, seed=11, size=(96, 96)).read_text())
    assert {ann["category_id"] for ann in dataset["annotations"]} == {1, 2, 3, 4}


def test_generation_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    runs = {
        name: synthetic.generate(tmp_path / name, 4, seed=seed, size=(120, 160))
        for name, seed in (("first", 5), ("again", 5), ("other", 6))
    }

    def image_bytes(annotation_file: Path) -> list[bytes]:
        return [p.read_bytes() for p in sorted((annotation_file.parent / "images").iterdir())]

    assert runs["first"].read_bytes() == runs["again"].read_bytes()
    assert image_bytes(runs["first"]) == image_bytes(runs["again"])
    assert image_bytes(runs["first"]) != image_bytes(runs["other"])


def test_first_images_do_not_depend_on_how_many_are_generated(tmp_path: Path) -> None:
    def run(name: str, num_images: int) -> dict:
        annotation_file = synthetic.generate(tmp_path / name, num_images, seed=9, size=(96, 128))
        return json.loads(annotation_file.read_text())

    short, long = run("short", 2), run("long", 5)
    assert long["images"][:2] == short["images"]
    assert long["annotations"][: len(short["annotations"])] == short["annotations"]
    for name in ("000001.png", "000002.png"):
        assert (tmp_path / "short/images" / name).read_bytes() == (tmp_path / "long/images" / name).read_bytes()


def test_size_ranges_are_drawn_per_image_within_bounds(tmp_path: Path) -> None:
    dataset = json.loads(synthetic.generate(tmp_path, 8, seed=2, size=((100, 140), 150), max_shapes=3).read_text())
    heights = {info["height"] for info in dataset["images"]}
    assert all(100 <= h <= 140 for h in heights) and len(heights) > 1
    assert {info["width"] for info in dataset["images"]} == {150}


def test_jpeg_output_writes_readable_jpg_files(tmp_path: Path) -> None:
    dataset = json.loads(synthetic.generate(tmp_path, 2, seed=1, size=(64, 80), image_format="jpg").read_text())
    for info in dataset["images"]:
        assert info["file_name"].endswith(".jpg")
        assert cv2.imread(str(tmp_path / "images" / info["file_name"])).shape == (64, 80, 3)


def test_make_sample_returns_an_rgb_image_and_typed_instances(samples: list[Sample]) -> None:
    for image, instances in samples:
        assert image.shape == (200, 260, 3) and image.dtype == np.uint8
        for instance in instances:
            assert instance["mask"].shape == (200, 260) and instance["mask"].dtype == bool
            assert instance["keypoints"].shape == (K, 3)
            assert 1 <= instance["category_id"] <= len(synthetic.CATEGORY_NAMES)


def shifted(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    height, width = mask.shape
    out[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = mask[
        max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out


def edge_contrast(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean RGB L1 step between 4-neighbours on opposite sides of the mask's boundary."""
    pixels = image.astype(np.float64)
    steps, count = 0.0, 0
    for axis in (0, 1):
        step = np.abs(np.diff(pixels, axis=axis)).sum(axis=-1)
        crosses = np.diff(mask.astype(np.int8), axis=axis) != 0
        steps, count = steps + step[crosses].sum(), count + crosses.sum()
    return steps / count


def test_mask_boundaries_are_the_painted_edges_to_the_pixel(samples: list[Sample]) -> None:
    # Shapes are painted without anti-aliasing in a colour that contrasts with what lies beneath,
    # so the image steps exactly where an exact mask changes; the same mask moved by one pixel
    # straddles fewer of those steps.
    for image, instances in samples:
        for instance in instances:
            mask = instance["mask"]
            exact = edge_contrast(image, mask)
            for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                assert exact > edge_contrast(image, shifted(mask, dy, dx))


def test_visible_extreme_keypoints_are_extreme_pixels_of_the_mask(samples: list[Sample]) -> None:
    # A visible extreme point is on the shape's unoccluded outline, so nothing of the shape's
    # visible mask lies beyond it along its axis.
    top, right, bottom, left = (KEYPOINT_INDEX[n] for n in ("top", "right", "bottom", "left"))
    checked = 0
    for _, instances in samples:
        for instance in instances:
            rows, cols = np.nonzero(instance["mask"])
            points = instance["keypoints"]
            for k, extreme in ((top, rows.min()), (bottom, rows.max())):
                if points[k, 2] == 2:
                    assert int(points[k, 1]) == extreme
                    checked += 1
            for k, extreme in ((left, cols.min()), (right, cols.max())):
                if points[k, 2] == 2:
                    assert int(points[k, 0]) == extreme
                    checked += 1
    assert checked > 100


def test_flip_map_relabels_keypoints_of_a_mirrored_image(samples: list[Sample]) -> None:
    # Mirror x -> width - x, then swap the FLIP_MAP pairs: the point now called "left" must be the
    # leftmost pixel of the mirrored mask, and "right" the rightmost.
    permutation = list(range(K))
    for a, b in synthetic.FLIP_MAP:
        permutation[KEYPOINT_INDEX[a]], permutation[KEYPOINT_INDEX[b]] = (
            KEYPOINT_INDEX[b],
            KEYPOINT_INDEX[a],
        )
    checked = 0
    for image, instances in samples:
        width = image.shape[1]
        for instance in instances:
            mirrored_mask = instance["mask"][:, ::-1]
            points = instance["keypoints"].copy()
            points[:, 0] = width - points[:, 0]
            points = points[permutation]
            cols = np.nonzero(mirrored_mask)[1]
            for name, extreme in (("left", cols.min()), ("right", cols.max())):
                x, _, v = points[KEYPOINT_INDEX[name]]
                if v == 2:
                    assert int(x) == extreme
                    checked += 1
    assert checked > 50


def test_module_imports_without_torch() -> None:
    code = "import sys, model.synthetic; sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
