"""COCO evaluation with pycocotools: box, mask and keypoint AP, overall and per class.

APs are fractions in [0, 1], as pycocotools computes them (``None`` where undefined: no ground
truth in that class or area range). Keypoint AP needs one OKS sigma per keypoint: COCO's for its
17 person keypoints, otherwise the mean of COCO's for every keypoint (a keypoint as hard to place
as the average COCO one).

A box-only ground truth (an annotation without ``segmentation``: a box still to be refined, see
docs/decisions/0015-box-only-labels.md) counts for box AP and is ignored for mask AP: there it is
a crowd region of its box, so a predicted mask on it is neither a hit nor a false positive.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from model.config import COCO_PERSON_KEYPOINT_NAMES
from model.data import CocoData
from model.structures import Instances

# pycocotools' sigmas of COCO's person keypoints, in COCO_PERSON_KEYPOINT_NAMES order
COCO_OKS_SIGMAS = (
    np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89])
    / 10.0
)

_SUMMARY_NAMES = {
    "bbox": ("AP", "AP50", "AP75", "APs", "APm", "APl"),
    "segm": ("AP", "AP50", "AP75", "APs", "APm", "APl"),
    "keypoints": ("AP", "AP50", "AP75", "APm", "APl"),
}


def oks_sigmas(keypoint_names: Sequence[str]) -> np.ndarray:
    if tuple(keypoint_names) == COCO_PERSON_KEYPOINT_NAMES:
        return COCO_OKS_SIGMAS
    return np.full(len(keypoint_names), COCO_OKS_SIGMAS.mean())


def instances_to_results(
    instances: Instances,
    image_id: int,
    category_of: Callable[[str], int | None],
    with_keypoints: Callable[[int], bool] = lambda _: True,
) -> list[dict[str, Any]]:
    """COCO result records of one image's predictions: box ``[x, y, w, h]``, mask as compressed
    RLE, keypoints ``[x, y, score, ...]``; classes the data set does not have are left out."""
    results = []
    masks = None
    if instances.masks is not None and len(instances):
        masks = mask_utils.encode(np.asfortranarray(instances.masks.numpy().transpose(1, 2, 0).astype(np.uint8)))
    for i in range(len(instances)):
        category_id = category_of(instances.label_names[i])
        if category_id is None:
            continue
        x1, y1, x2, y2 = (float(v) for v in instances.boxes[i])
        result: dict[str, Any] = {
            "image_id": image_id,
            "category_id": category_id,
            "score": float(instances.scores[i]),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
        }
        if masks is not None:
            rle = masks[i]
            result["segmentation"] = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
        if instances.keypoints is not None and with_keypoints(category_id):
            points = instances.keypoints[i].clone()
            assert instances.keypoint_scores is not None
            points[:, 2] = instances.keypoint_scores[i]
            result["keypoints"] = [float(v) for v in points.reshape(-1)]
        results.append(result)
    return results


def has_mask(annotation: dict[str, Any]) -> bool:
    """Whether a COCO annotation holds a mask (polygons or RLE), not only a box."""
    return bool(annotation.get("segmentation"))


def mask_ground_truth(ground_truth: dict[str, Any]) -> dict[str, Any]:
    """``ground_truth`` for mask AP: each box-only annotation made a crowd region covering its box
    (pycocotools ignores a detection that falls on a crowd region; it cannot read an annotation
    without a segmentation at all)."""
    annotations = []
    for entry in ground_truth["annotations"]:
        if not has_mask(entry):
            x, y, w, h = (float(v) for v in entry["bbox"])
            entry = dict(entry, iscrowd=1, segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]])
        annotations.append(entry)
    return dict(ground_truth, annotations=annotations)


def _coco(ground_truth: dict[str, Any]) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools talks on stdout: that is our events' channel
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
    return gt


def coco_evaluate(
    ground_truth: dict[str, Any],
    results: list[dict[str, Any]],
    iou_types: Iterable[str] = ("bbox", "segm"),
    keypoint_names: Sequence[str] = (),
) -> dict[str, dict[str, Any]]:
    """pycocotools' evaluation of ``results`` against ``ground_truth`` (COCO dicts).

    Returns:
        Per IoU type (``bbox``, ``segm``, ``keypoints``): ``AP``, ``AP50``, ``AP75``, ``APs``
        (not for keypoints), ``APm``, ``APl`` and ``per_class`` (category name -> AP).
    """
    truth = _coco(ground_truth)
    names = {c["id"]: c["name"] for c in ground_truth["categories"]}
    summary: dict[str, dict[str, Any]] = {}
    for iou_type in iou_types:
        # copies: loadRes writes area, bbox and id into the records it is given
        usable = [dict(r) for r in results if iou_type != "segm" or "segmentation" in r]
        usable = [r for r in usable if iou_type != "keypoints" or "keypoints" in r]
        if iou_type == "keypoints":
            # only categories with keypoints take part
            category_ids = [c["id"] for c in ground_truth["categories"] if c.get("keypoints")]
        else:
            category_ids = sorted(names)
        gt = truth
        if iou_type == "segm" and not all(has_mask(a) for a in ground_truth["annotations"]):
            gt = _coco(mask_ground_truth(ground_truth))
        if not gt.getImgIds() or not category_ids:
            continue
        if not usable:
            summary[iou_type] = {key: 0.0 for key in _SUMMARY_NAMES[iou_type]}
            summary[iou_type]["per_class"] = {names[c]: 0.0 for c in category_ids}
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            detections = gt.loadRes(usable)
            evaluator = COCOeval(gt, detections, iou_type)
            evaluator.params.catIds = category_ids
            if iou_type == "keypoints":
                evaluator.params.kpt_oks_sigmas = oks_sigmas(keypoint_names)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = [None if s < 0 else float(s) for s in evaluator.stats]
        entry: dict[str, Any] = dict(zip(_SUMMARY_NAMES[iou_type], stats))
        # precision: (IoU thresholds, recall points, classes, area ranges, max detections)
        precision = evaluator.eval["precision"][:, :, :, 0, -1]
        per_class = {}
        for k, category_id in enumerate(evaluator.params.catIds):
            values = precision[:, :, k]
            values = values[values > -1]
            per_class[names[category_id]] = float(values.mean()) if values.size else None
        entry["per_class"] = per_class
        summary[iou_type] = entry
    return summary


def evaluate(
    predictor: Any,
    data: CocoData,
    read: Callable[[Any], np.ndarray] | None = None,
    on_image: Callable[[int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run ``predictor`` (a ``model.predictor.Predictor``) over the images of ``data`` and
    evaluate with pycocotools. Model classes map to the data's categories by name; keypoints are
    evaluated when the model predicts them and the data has some.
    """
    from model.images import read_image

    by_name = {c["name"]: c["id"] for c in data.raw["categories"]}
    keypoint_categories = {c["id"] for c in data.raw["categories"] if c.get("keypoints")}
    model_keypoints = tuple(predictor.keypoint_names)
    with_keypoints = bool(model_keypoints) and model_keypoints == data.labels.keypoint_names
    results: list[dict[str, Any]] = []
    for count, record in enumerate(data.images, start=1):
        image = read(record) if read is not None else read_image(data.image_root / record.file_name)
        instances = predictor.predict(image)
        if not with_keypoints:
            instances.keypoints = instances.keypoint_scores = None
        results += instances_to_results(instances, record.image_id, by_name.get, keypoint_categories.__contains__)
        if on_image is not None:
            on_image(count)
    iou_types = ["bbox"]
    if predictor.model.config.mask_on:
        iou_types.append("segm")
    if with_keypoints and keypoint_categories:
        iou_types.append("keypoints")
    return coco_evaluate(data.ground_truth(), results, iou_types, data.labels.keypoint_names)


def format_summary(summary: dict[str, dict[str, Any]]) -> str:
    """A few lines for a person: AP figures per IoU type, then AP per class."""
    lines = []
    titles = {"bbox": "box", "segm": "mask", "keypoints": "keypoints"}
    for iou_type, entry in summary.items():
        figures = "  ".join(
            f"{key} {value:.3f}" if value is not None else f"{key} -"
            for key, value in entry.items()
            if key != "per_class"
        )
        lines.append(f"{titles[iou_type]:<10} {figures}")
    for iou_type, entry in summary.items():
        per_class = ", ".join(
            f"{name} {ap:.3f}" if ap is not None else f"{name} -" for name, ap in entry["per_class"].items()
        )
        lines.append(f"{titles[iou_type]} AP per class: {per_class}")
    return "\n".join(lines)
