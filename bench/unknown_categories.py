"""What the model's tools do for a category it does not know (docs/decisions/0016), measured on
the bundled demo model (ellipse, rectangle, triangle, star) with shapes it never saw (crosses,
crescents, arrows, hearts: ``model.synthetic_novel``) painted over its own kind of scene.

    python bench/unknown_categories.py [--images 30] [--seed 0]

Box to mask: every shape gets the box a person would draw (its visible mask's box, 2 px wider on
every side) and three class-agnostic masks of the mask head are compared, by mask IoU against the
ground truth: (a) the mask of the box's most probable class, (b) the class masks averaged with the
foreground class probabilities as weights, (c) the pixel-wise maximum over the class masks. The
known shapes are the reference, with the mask of their true class too. The shipped rule is (a)
(``Predictor.predict_in_box`` with a category the model does not know); the row "predict_in_box"
checks that it gives the same masks.

Click to segment: a click on the innermost pixel of each shape (farthest from its edge). The
detection under the click (``annotator.prompts.detection_at`` on ``Predictor.predict``), the
fallback alone (``annotator.prompts.box_grown_from``), and what the click tool gives: the
detection, else the fallback. A click that gives nothing counts as IoU 0.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from annotator import masks  # noqa: E402
from annotator.prompts import box_grown_from, detection_at, proposals_at_click  # noqa: E402
from model.predictor import Predictor  # noqa: E402
from model.roi_heads import roi_align_fpn  # noqa: E402
from model.synthetic_novel import NOVEL_CATEGORY_NAMES, make_novel_sample  # noqa: E402
from model.transform import paste_masks_in_image, rescale_boxes, rescale_ratios  # noqa: E402
from resources import DEMO_MODEL  # noqa: E402

UNKNOWN = "cat"  # a category the demo model does not know
BOX_MARGIN = 2.0  # pixels a person's box leaves around the shape
RULES = ("most probable class", "probability-weighted mean", "max over classes")


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def drawn_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    return (
        max(0.0, xs.min() - BOX_MARGIN),
        max(0.0, ys.min() - BOX_MARGIN),
        min(float(width), xs.max() + 1 + BOX_MARGIN),
        min(float(height), ys.max() + 1 + BOX_MARGIN),
    )


def innermost_pixel(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of the centre of the mask's pixel farthest from its edge."""
    distance = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return x + 0.5, y + 0.5


def box_masks(predictor: Predictor, image: np.ndarray, boxes: list, true_classes: list[int]) -> dict[str, list]:
    """Each rule's (H, W) bool masks for ``boxes`` (image pixels), and the true class's where known
    (class index > 0)."""
    model, heads = predictor.model, predictor.model.roi_heads
    size = image.shape[:2]
    with torch.inference_mode(), predictor.policy.autocast():
        tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255).to(predictor.device)
        batch = model.preprocess([tensor])
        features = model.extract_features(batch)
        boxes_image = torch.tensor(boxes, dtype=torch.float32, device=predictor.device)
        boxes_input = rescale_boxes(boxes_image, rescale_ratios(size, batch.sizes[0], predictor.device))
        logits, _ = heads.classify(features, [boxes_input])
        probabilities = F.softmax(logits.float(), dim=-1)  # (R, C)
        x = roi_align_fpn(features, [boxes_input], 14)
        class_masks = heads.mask_predictor(heads.mask_head(x)).float().sigmoid()  # (R, C, 28, 28)
    foreground = probabilities[:, 1:] / probabilities[:, 1:].sum(dim=1, keepdim=True)
    rows = torch.arange(len(boxes))
    choices = {
        RULES[0]: class_masks[rows, probabilities[:, 1:].argmax(dim=1) + 1],
        RULES[1]: (class_masks[:, 1:] * foreground[:, :, None, None]).sum(dim=1),
        RULES[2]: class_masks[:, 1:].max(dim=1).values,
        "true class": class_masks[rows, torch.tensor(true_classes).clamp(min=0)],
    }
    threshold = predictor.model.config.mask_threshold
    return {
        name: list((paste_masks_in_image(chosen[:, None], boxes_image.cpu(), size)[:, 0] >= threshold).numpy())
        for name, chosen in choices.items()
    }


def click_iou(proposals: list, truth: np.ndarray) -> float:
    return mask_iou(masks.decode(proposals[0].rle), truth) if proposals else 0.0


def measure(predictor: Predictor, images: int, seed: int) -> dict[str, dict[str, list[float]]]:
    """IoUs per shape kind ('unknown', 'known') and method."""
    scores: dict[str, dict[str, list[float]]] = {"unknown": {}, "known": {}}
    rng = np.random.default_rng(seed)
    for _ in range(images):
        image, shapes = make_novel_sample(rng, 360, 480)
        names = predictor.class_names
        true_classes = [names.index(s["name"]) if s["name"] in names else -1 for s in shapes]
        boxes = [drawn_box(s["mask"]) for s in shapes]
        rules = box_masks(predictor, image, boxes, true_classes)
        detections = predictor.predict(image)
        segment_box = functools.partial(predictor.predict_in_box, image, label=UNKNOWN)
        for index, shape in enumerate(shapes):
            kind = "unknown" if shape["name"] in NOVEL_CATEGORY_NAMES else "known"
            found, truth = scores[kind], shape["mask"]
            for method, chosen in rules.items():
                if method != "true class" or kind == "known":
                    found.setdefault(f"box: {method}", []).append(mask_iou(chosen[index], truth))
            drawn = segment_box(boxes[index]).masks[0].numpy()
            found.setdefault(f"box: predict_in_box({UNKNOWN!r})", []).append(mask_iou(drawn, truth))

            point = innermost_pixel(truth)
            held = detection_at(detections, point) is not None
            found.setdefault("click: a detection holds it (share)", []).append(float(held))
            grown = box_grown_from(point, image.shape[:2], segment_box)
            found.setdefault("click: fallback alone (box grown from it)", []).append(click_iou(grown, truth))
            given = proposals_at_click(detections, point, image.shape[:2], segment_box)
            found.setdefault("click: the tool (detection, else fallback)", []).append(click_iou(given, truth))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    predictor = Predictor(DEMO_MODEL, device="cpu")
    start = time.perf_counter()
    scores = measure(predictor, args.images, args.seed)
    print(f"demo model on cpu ({predictor.execution}), {args.images} scenes, {time.perf_counter() - start:.0f} s")
    for kind, methods in scores.items():
        count = len(next(iter(methods.values())))
        print(f"\n{kind} shapes ({count}): mean / median IoU / share at 0.75 or more")
        for method, values in methods.items():
            good = sum(v >= 0.75 for v in values) / len(values)
            print(f"  {method:44s} {statistics.mean(values):.3f} / {statistics.median(values):.3f} / {good:.2f}")


if __name__ == "__main__":
    main()
