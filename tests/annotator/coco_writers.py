"""COCO files as other tools write them, built in the tests (small images, the tools' own field
layout and quirks), and pycocotools' evaluation of one file against another.

- labelme2coco (labelme's examples/instance_segmentation/labelme2coco.py): ids from 0, category 0
  ``_background_`` with no annotations, ``"supercategory": null``, nulls in info and licenses,
  box and area from pycocotools' mask.
- Roboflow: category 0 is the dataset's name and the supercategory of the others; ids from 0; a
  box-only annotation has ``"segmentation": []``; images carry ``extra``.
- Datumaro: a keypoint category with ``"keypoints": []`` (no names) while its annotations hold
  keypoints; ``attributes`` on annotations; empty strings in info.
- mmpose (tests/data/coco/test_coco.json, COCO's person_keypoints): image ids such as 785, 17
  keypoints with COCO's 1-based skeleton, boxes around the whole person (occluded parts included)
  larger than the visible segmentation, float areas of the polygon, and a person partly outside
  the frame (negative box and keypoint coordinates).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from annotator import masks
from model.config import COCO_PERSON_KEYPOINT_NAMES
from tests.files import write_images

COCO_KEYPOINTS = list(COCO_PERSON_KEYPOINT_NAMES)  # as COCO's person_keypoints file names them
COCO_SKELETON = [
    [16, 14],
    [14, 12],
    [17, 15],
    [15, 13],
    [12, 13],
    [6, 12],
    [7, 13],
    [6, 7],
    [6, 8],
    [7, 9],
    [8, 10],
    [9, 11],
    [2, 3],
    [1, 2],
    [1, 3],
    [2, 4],
    [3, 5],
    [4, 6],
    [5, 7],
]
SIZE = (40, 30)  # width, height of every image here


def _polygon_box_and_area(polygon: list[float]) -> tuple[list[float], float]:
    """Box and area as pycocotools gives them for the polygon's mask (what labelme2coco writes)."""
    rle = masks.from_polygons([polygon], SIZE[1], SIZE[0])
    return list(masks.bbox(rle)), float(masks.area(rle))


def labelme2coco(folder: Path) -> dict:
    names = write_images(folder, [SIZE, SIZE])
    square, triangle = [5.0, 5.0, 15.0, 5.0, 15.0, 15.0, 5.0, 15.0], [20.0, 2.0, 35.0, 2.0, 27.5, 20.0]
    annotations = []
    for image_id, (label, polygon) in enumerate([(1, square), (2, triangle)]):
        box, area = _polygon_box_and_area(polygon)
        annotations.append(
            {
                "id": len(annotations),
                "image_id": image_id,
                "category_id": label,
                "segmentation": [polygon],
                "area": area,
                "bbox": box,
                "iscrowd": 0,
            }
        )
    return {
        "info": {
            "description": None,
            "url": None,
            "version": None,
            "year": 2024,
            "contributor": None,
            "date_created": "2024-05-01 10:00:00.000000",
        },
        "licenses": [{"url": None, "id": 0, "name": None}],
        "images": [
            {
                "license": 0,
                "url": None,
                "file_name": name,
                "height": SIZE[1],
                "width": SIZE[0],
                "date_captured": None,
                "id": index,
            }
            for index, name in enumerate(names)
        ],
        "type": "instances",
        "annotations": annotations,
        "categories": [
            {"supercategory": None, "id": 0, "name": "_background_"},
            {"supercategory": None, "id": 1, "name": "dog"},
            {"supercategory": None, "id": 2, "name": "cat"},
        ],
    }


def roboflow(folder: Path) -> dict:
    (name,) = write_images(folder, [SIZE])
    polygon = [22.0, 4.0, 36.0, 4.0, 36.0, 25.0, 22.0, 25.0]
    box, area = _polygon_box_and_area(polygon)
    return {
        "info": {
            "year": "2023",
            "version": "3",
            "description": "Exported from roboflow.com",
            "contributor": "",
            "url": "https://public.roboflow.com/object-detection/pets",
            "date_created": "2023-03-01T10:00:00+00:00",
        },
        "licenses": [{"id": 1, "url": "https://creativecommons.org/licenses/by/4.0/", "name": "CC BY 4.0"}],
        "categories": [
            {"id": 0, "name": "pets", "supercategory": "none"},
            {"id": 1, "name": "cat", "supercategory": "pets"},
            {"id": 2, "name": "dog", "supercategory": "pets"},
        ],
        "images": [
            {
                "id": 0,
                "license": 1,
                "file_name": name,
                "height": SIZE[1],
                "width": SIZE[0],
                "date_captured": "2023-03-01T10:00:00+00:00",
                "extra": {"name": "IMG_0001.jpg"},
            }
        ],
        "annotations": [
            {
                "id": 0,
                "image_id": 0,
                "category_id": 1,
                "bbox": [3, 3, 12, 10],
                "area": 120,
                "segmentation": [],
                "iscrowd": 0,
            },
            {
                "id": 1,
                "image_id": 0,
                "category_id": 2,
                "bbox": box,
                "area": area,
                "segmentation": [polygon],
                "iscrowd": 0,
            },
        ],
    }


def datumaro(folder: Path) -> dict:
    (name,) = write_images(folder, [SIZE])
    polygon = [6.0, 4.0, 20.0, 4.0, 20.0, 26.0, 6.0, 26.0]
    box, area = _polygon_box_and_area(polygon)
    return {
        "licenses": [{"name": "", "id": 0, "url": ""}],
        "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "", "year": ""},
        "categories": [{"id": 1, "name": "hand", "supercategory": "", "keypoints": [], "skeleton": []}],
        "images": [
            {
                "id": 1,
                "width": SIZE[0],
                "height": SIZE[1],
                "file_name": name,
                "license": 0,
                "flickr_url": "",
                "coco_url": "",
                "date_captured": 0,
            }
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "segmentation": [polygon],
                "area": area,
                "bbox": box,
                "iscrowd": 0,
                "attributes": {"occluded": False},
                "keypoints": [8.0, 6.0, 2, 18.0, 6.0, 2, 12.0, 24.0, 1],
                "num_keypoints": 3,
            }
        ],
    }


def _person(annotation_id: int, image_id: int, x: float, visible: list[float], box: list[float]) -> dict:
    keypoints = []
    for k in range(17):  # a column of keypoints down the whole person, the lower ones occluded
        keypoints += [x + (k % 3) - 1, box[1] + 1 + k * (box[3] - 2) / 16, 2 if k < 9 else 1]
    return {
        "segmentation": [visible],
        "num_keypoints": 17,
        "area": round(_polygon_box_and_area(visible)[1] - 0.37, 5),
        "iscrowd": 0,
        "keypoints": keypoints,
        "image_id": image_id,
        "bbox": box,
        "category_id": 1,
        "id": annotation_id,
    }


def mmpose(folder: Path) -> dict:
    names = write_images(folder, [SIZE, SIZE])
    return {
        "info": {"description": "For testing COCO dataset only.", "year": 2020, "date_created": "2020/06/20"},
        "licenses": [
            {
                "url": "http://creativecommons.org/licenses/by-nc-sa/2.0/",
                "id": 1,
                "name": "Attribution-NonCommercial-ShareAlike License",
            }
        ],
        "images": [
            {
                "license": 4,
                "file_name": name,
                "coco_url": f"http://images.cocodataset.org/val2017/{name}",
                "height": SIZE[1],
                "width": SIZE[0],
                "date_captured": "2013-11-19 21:22:42",
                "flickr_url": "http://farm8.staticflickr.com/7015/6795644157_f019453ae7_z.jpg",
                "id": image_id,
            }
            for name, image_id in zip(names, (785, 40083))
        ],
        "annotations": [
            # the upper body is visible; the box holds the whole person
            _person(442619, 785, 12.0, [8.3, 2.1, 16.7, 2.4, 17.2, 14.6, 7.9, 14.2], [6.5, 1.5, 12.0, 27.0]),
            # partly outside the frame on the left: negative box and keypoint coordinates
            _person(543213, 40083, 0.5, [0.0, 3.0, 6.0, 3.0, 6.0, 20.0, 0.0, 20.0], [-4.0, 2.0, 11.0, 25.0]),
        ],
        "categories": [
            {
                "supercategory": "person",
                "id": 1,
                "name": "person",
                "keypoints": list(COCO_KEYPOINTS),
                "skeleton": [list(edge) for edge in COCO_SKELETON],
            }
        ],
    }


WRITERS: dict[str, Callable[[Path], dict]] = {
    "labelme2coco": labelme2coco,
    "roboflow": roboflow,
    "datumaro": datumaro,
    "mmpose": mmpose,
}


def _quiet(function: Callable, *args: object) -> object:
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args)


def average_precision(
    source: Path,
    results: list[dict],
    iou_type: str,
    category_ids: list[int] | None = None,
    keypoint_count: int | None = None,
) -> float:
    """pycocotools' AP of ``results`` (annotations with a score) against the file ``source``."""
    ground_truth = _quiet(COCO, str(source))
    detections = _quiet(ground_truth.loadRes, results)
    evaluation = COCOeval(ground_truth, detections, iou_type)
    if category_ids is not None:
        evaluation.params.catIds = category_ids
    if keypoint_count is not None:  # pycocotools assumes COCO's 17 person keypoints
        evaluation.params.kpt_oks_sigmas = np.full(keypoint_count, 0.05)
    _quiet(evaluation.evaluate)
    _quiet(evaluation.accumulate)
    _quiet(evaluation.summarize)
    return float(evaluation.stats[0])
