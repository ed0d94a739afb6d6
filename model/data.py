"""Training data: a COCO instances / keypoints file over an image folder, as (image, target) pairs.

Segmentations may be polygons, compressed or uncompressed RLE; keypoints are read as continuous
image coordinates (pixel ``(row i, column j)`` covers ``[j, j+1) x [i, i+1)``), the convention of
our exports and of ``model.synthetic``. Images without annotations stay in the set as negatives.
Crowd annotations (``iscrowd: 1``) are not ground truth: their boxes go to ``crowd_boxes``, where
the RPN and the box head sample nothing (Detectron's crowd filter). Annotations whose box is
degenerate (a side under one pixel, or not finite) are dropped, with one warning naming them all.

Labels are contiguous: category ``i`` of the file's categories sorted by id is class ``i + 1``
(0 is the background). The keypoint head predicts one set of keypoints for every class, so all
categories that have keypoints must name the same ones.

Augmentation (training only): horizontal flip, keypoint names swapped by the flip map; the
multi-scale resize happens in the model (``MaskRCNN.losses``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import Tensor

from model.config import skeleton_from_coco
from model.errors import InputError
from model.images import DEFAULT_MAX_PIXELS, header_size, read_image

# a box side below this (pixels) makes an annotation degenerate
MIN_BOX_SIDE = 1.0


class DatasetError(InputError):
    """A COCO file that cannot be used for training, or an image that does not match it: ``path``
    names the file, ``problem`` says what is wrong and in which entry. An image that cannot be
    read at all is an ``ImageReadError``."""


@dataclass(frozen=True)
class LabelSpace:
    """The classes and keypoint schema of a data set, in the model's terms.

    ``category_ids[i]`` is the COCO id of class ``i + 1``; ``class_names[0]`` is the background.
    The skeleton is 0-based (COCO files store it 1-based).
    """

    category_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    keypoint_names: tuple[str, ...] = ()
    keypoint_skeleton: tuple[tuple[int, int], ...] = ()
    keypoint_flip_map: tuple[tuple[str, str], ...] = ()

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    def label(self, category_id: int) -> int:
        return self.category_ids.index(category_id) + 1

    def flip_permutation(self) -> list[int]:
        """Keypoint order after a horizontal flip: entry k is the keypoint that becomes k."""
        index = {name: k for k, name in enumerate(self.keypoint_names)}
        order = list(range(self.num_keypoints))
        for a, b in self.keypoint_flip_map:
            if a in index and b in index:
                order[index[a]], order[index[b]] = index[b], index[a]
        return order


_SIDES = {"left": "right", "right": "left", "l": "r", "r": "l"}


def infer_flip_map(names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """Pairs of keypoint names that differ only by a left/right word (``left_eye`` /
    ``right_eye``, ``left`` / ``right``, ``l_knee`` / ``r_knee``, ``wrist_l`` / ``wrist_r``)."""
    present = set(names)
    pairs: list[tuple[str, str]] = []
    for name in names:
        parts = re.split(r"([_\-. ])", name)
        for i, part in enumerate(parts):
            other = _SIDES.get(part.lower())
            if other is None:
                continue
            if part.isupper():
                other = other.upper()
            elif part[:1].isupper():
                other = other.capitalize()
            mirrored = "".join(parts[:i] + [other] + parts[i + 1 :])
            if mirrored in present and part.lower() in ("left", "l") and (name, mirrored) not in pairs:
                pairs.append((name, mirrored))
            break
    return tuple(pairs)


@dataclass
class CocoImage:
    """One image and its usable annotations, as read from the file."""

    image_id: int
    file_name: str
    width: int
    height: int
    boxes: np.ndarray  # (G, 4) float32 x1, y1, x2, y2
    labels: np.ndarray  # (G,) int64
    segmentations: list[Any]  # per instance: polygons, RLE, or None (box only)
    keypoints: np.ndarray  # (G, K, 3) float32
    crowd_boxes: np.ndarray  # (C, 4) float32


@dataclass
class CocoData:
    """A parsed COCO file: its label space, its images, and what was dropped on the way."""

    path: Path
    image_root: Path
    labels: LabelSpace
    images: list[CocoImage]
    raw: dict[str, Any]  # the file's content, for evaluation's ground truth
    warnings: list[str] = field(default_factory=list)

    def subset(self, image_ids: Sequence[int]) -> CocoData:
        keep = set(image_ids)
        return CocoData(
            self.path,
            self.image_root,
            self.labels,
            [r for r in self.images if r.image_id in keep],
            self.raw,
            self.warnings,
        )

    @property
    def image_ids(self) -> list[int]:
        return [record.image_id for record in self.images]

    def split(self, val_fraction: float, seed: int = 0) -> tuple[CocoData, CocoData]:
        """A random hold-out of ``val_fraction`` of the images (at least one when the fraction is
        positive and there are two images or more), the same for the same file and seed."""
        if not 0 <= val_fraction < 1:
            raise ValueError(f"the validation fraction must be in [0, 1), got {val_fraction}")
        ids = sorted(self.image_ids)
        order = np.random.default_rng(seed).permutation(len(ids))
        count = held_out_count(len(ids), val_fraction)
        val = sorted(ids[i] for i in order[:count])
        train = sorted(ids[i] for i in order[count:])
        return self.subset(train), self.subset(val)

    def ground_truth(self) -> dict[str, Any]:
        """A COCO dict of these images, with the fields pycocotools' evaluation needs filled in
        (``area``, ``iscrowd``, ``num_keypoints``), for ``model.evaluation``."""
        keep = set(self.image_ids)
        annotations = []
        for entry in self.raw.get("annotations", []):
            if entry.get("image_id") not in keep:
                continue
            entry = dict(entry)
            entry.setdefault("iscrowd", 0)
            if "area" not in entry:
                bbox = entry.get("bbox") or [0, 0, 0, 0]
                entry["area"] = float(bbox[2] * bbox[3])
            keypoints = entry.get("keypoints")
            if keypoints and "num_keypoints" not in entry:
                entry["num_keypoints"] = int(sum(1 for v in keypoints[2::3] if v > 0))
            entry.setdefault("num_keypoints", 0)
            annotations.append(entry)
        images = [entry for entry in self.raw["images"] if entry["id"] in keep]
        return {"images": images, "annotations": annotations, "categories": self.raw["categories"]}


def _error(path: Path, where: str, problem: str) -> DatasetError:
    return DatasetError(path, f"{where}: {problem}" if where else problem)


def _size_mismatch(path: Path, width: int, height: int, record: CocoImage) -> DatasetError:
    return DatasetError(path, f"the image is {width}x{height} but the COCO file says {record.width}x{record.height}")


def check_image(path: Path, record: CocoImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuses an image file that is missing, unreadable, too large, too narrow for the model
    (``model.images.MAX_ASPECT_RATIO``) or of another size than ``record`` says, from its header
    alone (``model.images.header_size``): decoding every image before training would cost as much
    as an epoch. Data that is truncated after a good header, and a size that differs only by a
    quarter turn, are found when the image is decoded (``CocoDataset``).

    Raises:
        ImageReadError: naming the image file.
    """
    width, height = header_size(path, max_pixels)
    # an EXIF quarter turn swaps the header's sides
    if sorted((width, height)) != sorted((record.width, record.height)):
        raise _size_mismatch(path, width, height, record)


def _label_space(path: Path, categories: list[dict[str, Any]]) -> LabelSpace:
    categories = sorted(categories, key=lambda c: c["id"])
    keypoint_names: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    owner = ""
    for category in categories:
        names = tuple(category.get("keypoints") or ())
        if not names:
            continue
        if keypoint_names and names != keypoint_names:
            raise _error(
                path,
                f"category '{category['name']}'",
                f"keypoints {list(names)} differ from those of '{owner}' {list(keypoint_names)}; the "
                "keypoint head predicts one set for all categories",
            )
        if not keypoint_names:
            keypoint_names, owner = names, category["name"]
            skeleton = skeleton_from_coco(category.get("skeleton") or ())
    return LabelSpace(
        category_ids=tuple(int(c["id"]) for c in categories),
        class_names=("__background__", *(str(c["name"]) for c in categories)),
        keypoint_names=keypoint_names,
        keypoint_skeleton=skeleton,
        keypoint_flip_map=infer_flip_map(keypoint_names),
    )


def _box_of(entry: dict[str, Any], height: int, width: int) -> list[float] | None:
    """``x1, y1, x2, y2`` from ``bbox``, else from the segmentation; clipped to the image."""
    bbox = entry.get("bbox")
    if bbox is None and entry.get("segmentation"):
        bbox = mask_utils.toBbox(_rle(entry["segmentation"], height, width)).tolist()
    if bbox is None or len(bbox) != 4:
        return None
    x, y, w, h = (float(v) for v in bbox)
    box = [min(max(x, 0.0), width), min(max(y, 0.0), height), min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)]
    return box


def _rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """One compressed RLE of a polygon list, or an (un)compressed RLE."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)
    counts = segmentation["counts"]
    return {"size": segmentation["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def _read_images(path: Path, entries: list, image_root: Path, num_keypoints: int) -> dict[int, CocoImage]:
    """The file's images by id, each without annotations yet, each image file checked by its header."""
    records: dict[int, CocoImage] = {}
    for index, entry in enumerate(entries):
        try:
            image_id, file_name = int(entry["id"]), str(entry["file_name"])
            width, height = int(entry["width"]), int(entry["height"])
        except (KeyError, TypeError, ValueError):
            raise _error(path, f"images[{index}]", "needs 'id', 'file_name', 'width' and 'height'") from None
        if image_id in records:
            raise _error(path, f"images[{index}]", f"duplicate image id {image_id}")
        records[image_id] = CocoImage(
            image_id,
            file_name,
            width,
            height,
            boxes=np.zeros((0, 4), np.float32),
            labels=np.zeros(0, np.int64),
            segmentations=[],
            keypoints=np.zeros((0, num_keypoints, 3), np.float32),
            crowd_boxes=np.zeros((0, 4), np.float32),
        )
        check_image(image_root / file_name, records[image_id])

    return records


def held_out_count(images: int, val_fraction: float) -> int:
    """How many of ``images`` images ``CocoData.split`` holds out: ``val_fraction`` of them, rounded,
    and at least one but never all when the fraction is positive and there are two or more."""
    count = round(val_fraction * images)
    if val_fraction > 0 and images >= 2:
        count = min(max(count, 1), images - 1)
    return count


def load_coco(path: Path | str, image_root: Path | str) -> CocoData:
    """Read a COCO file for training or evaluation; every image file must pass ``check_image``.

    Raises:
        InputError: the file is not COCO JSON or an entry is malformed (naming the COCO file), or
            an image is missing, unreadable or of another size than the file says (naming the image).
    """
    path, image_root = Path(path), Path(image_root)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(path, "no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(path, f"not a readable JSON file ({error})") from None
    if not isinstance(raw, dict):
        raise _error(path, "", "not a COCO file (the top level is not an object)")
    for key in ("images", "categories"):
        if not isinstance(raw.get(key), list):
            raise _error(path, "", f"no '{key}' list; is this a COCO instances or keypoints file?")
    if not raw["categories"]:
        raise _error(path, "", "no categories: there is nothing to learn")
    raw.setdefault("annotations", [])
    try:
        labels = _label_space(path, raw["categories"])
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, DatasetError):
            raise
        raise _error(path, "categories", f"malformed entry ({error!r})") from None
    num_keypoints = labels.num_keypoints
    keypoint_categories = {
        int(c["id"]) for c in raw["categories"] if tuple(c.get("keypoints") or ()) == labels.keypoint_names
    }

    records = _read_images(path, raw["images"], image_root, num_keypoints)

    grouped: dict[int, list[tuple[list[float], int, Any, np.ndarray]]] = {i: [] for i in records}
    crowd: dict[int, list[list[float]]] = {i: [] for i in records}
    degenerate: list[str] = []
    for index, entry in enumerate(raw["annotations"]):
        where = f"annotations[{index}]"
        try:
            image_id, category_id = int(entry["image_id"]), int(entry["category_id"])
        except (KeyError, TypeError, ValueError):
            raise _error(path, where, "needs 'image_id' and 'category_id'") from None
        if image_id not in records:
            raise _error(path, where, f"image_id {image_id} is not among the file's images")
        if category_id not in labels.category_ids:
            raise _error(path, where, f"category_id {category_id} is not among the file's categories")
        record = records[image_id]
        try:
            box = _box_of(entry, record.height, record.width)
        except (TypeError, ValueError, KeyError) as error:
            raise _error(path, where, f"unreadable bbox or segmentation ({error})") from None
        if box is None:
            raise _error(path, where, "has neither 'bbox' nor 'segmentation'")
        if entry.get("iscrowd"):
            crowd[image_id].append(box)
            continue
        if not all(math.isfinite(v) for v in box) or box[2] - box[0] < MIN_BOX_SIDE or box[3] - box[1] < MIN_BOX_SIDE:
            degenerate.append(str(entry.get("id", where)))
            continue
        points = np.zeros((num_keypoints, 3), np.float32)
        values = entry.get("keypoints")
        if values and category_id in keypoint_categories:
            if len(values) != 3 * num_keypoints:
                raise _error(path, where, f"'keypoints' has {len(values)} numbers, not 3 x {num_keypoints}")
            points = np.asarray(values, np.float32).reshape(num_keypoints, 3)
            points[points[:, 2] <= 0] = 0
        grouped[image_id].append((box, labels.label(category_id), entry.get("segmentation") or None, points))

    warnings = []
    if degenerate:
        warnings.append(
            f"{path}: dropped {len(degenerate)} annotation(s) with a degenerate box (a side under "
            f"{MIN_BOX_SIDE:g} pixel after clipping to the image): id {', '.join(degenerate)}"
        )
    for image_id, record in records.items():
        instances = grouped[image_id]
        if instances:
            record.boxes = np.asarray([b for b, _, _, _ in instances], np.float32)
            record.labels = np.asarray([label for _, label, _, _ in instances], np.int64)
            record.segmentations = [s for _, _, s, _ in instances]
            record.keypoints = np.stack([k for _, _, _, k in instances]).astype(np.float32)
        if crowd[image_id]:
            record.crowd_boxes = np.asarray(crowd[image_id], np.float32)
    return CocoData(path, image_root, labels, list(records.values()), raw, warnings)


class CocoDataset(torch.utils.data.Dataset):
    """(image, target) pairs for ``MaskRCNN.losses``.

    An item is looked up by ``index`` or by ``(index, flip)``. The image is (3, H, W) uint8 RGB;
    the target holds ``boxes`` (G, 4) float32, ``labels`` (G,) int64, ``masks`` (G, H, W) uint8
    with ``has_mask`` (G,) bool (False for a box-only annotation: an empty mask, no mask loss),
    ``keypoints`` (G, K, 3) float32, ``crowd_boxes`` (C, 4) float32 and ``image_id``, all in the
    image's pixels after the flip.

    An image that cannot be used raises ``ImageReadError`` naming it; with ``errors_as_items`` the
    error is returned as the item instead, for a ``DataLoader`` (see ``collate``).
    """

    def __init__(self, data: CocoData, max_pixels: int = DEFAULT_MAX_PIXELS, *, errors_as_items: bool = False) -> None:
        self.data = data
        self.max_pixels = max_pixels
        self.errors_as_items = errors_as_items
        self.flip_order = data.labels.flip_permutation()

    def __len__(self) -> int:
        return len(self.data.images)

    def __getitem__(self, key: int | tuple[int, bool]) -> tuple[Tensor, dict[str, Tensor]] | InputError:
        try:
            return self._item(key)
        except InputError as error:
            if self.errors_as_items:
                return error
            raise

    def _item(self, key: int | tuple[int, bool]) -> tuple[Tensor, dict[str, Tensor]]:
        index, flip = key if isinstance(key, tuple) else (key, False)
        record = self.data.images[index]
        path = self.data.image_root / record.file_name
        pixels = read_image(path, self.max_pixels)
        height, width = pixels.shape[:2]
        if (height, width) != (record.height, record.width):
            raise _size_mismatch(path, width, height, record)
        masks = np.zeros((len(record.boxes), height, width), np.uint8)
        # a box without a mask (docs/decisions/0015) trains the box head only: its mask stays empty
        has_mask = np.array([segmentation is not None for segmentation in record.segmentations], dtype=bool)
        for i, segmentation in enumerate(record.segmentations):
            if segmentation is not None:
                masks[i] = mask_utils.decode(_rle(segmentation, height, width))
        boxes, keypoints, crowd = record.boxes.copy(), record.keypoints.copy(), record.crowd_boxes.copy()
        if flip:
            pixels, masks = pixels[:, ::-1], masks[:, :, ::-1]
            boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
            crowd[:, [0, 2]] = width - crowd[:, [2, 0]]
            labelled = keypoints[..., 2] > 0
            keypoints[..., 0] = np.where(labelled, width - keypoints[..., 0], 0)
            keypoints = keypoints[:, self.flip_order]
        image = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).contiguous()
        return image, {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(record.labels.copy()),
            "masks": torch.from_numpy(np.ascontiguousarray(masks)),
            "has_mask": torch.from_numpy(has_mask),
            "keypoints": torch.from_numpy(np.ascontiguousarray(keypoints)),
            "crowd_boxes": torch.from_numpy(crowd),
            "image_id": torch.tensor(record.image_id),
        }


class TrainingBatches(torch.utils.data.Sampler[list[tuple[int, bool]]]):
    """An endless stream of training batches that is a pure function of (seed, iteration), so
    that a resumed run sees exactly the batches an uninterrupted one would.

    Position ``p`` of the global stream is image ``perm_e[p % n]`` of epoch ``e = p // n``, each
    epoch a permutation drawn from ``(seed, e)``; its flip is drawn from ``(seed, p)``. Iteration
    ``i`` takes ``world_size * batch_size`` positions and rank ``r`` the ``r``-th slice of them.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        *,
        seed: int,
        start_iteration: int = 0,
        rank: int = 0,
        world_size: int = 1,
        flip_probability: float = 0.5,
    ) -> None:
        if size == 0:
            raise ValueError("no training images")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start_iteration, self.rank, self.world_size = start_iteration, rank, world_size
        self.flip_probability = flip_probability
        self._epochs: dict[int, np.ndarray] = {}

    def _image(self, position: int) -> int:
        epoch = position // self.size
        if epoch not in self._epochs:
            self._epochs = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.size)}
        return int(self._epochs[epoch][position % self.size])

    def _flip(self, position: int) -> bool:
        return bool(np.random.default_rng([self.seed, 1 << 20, position]).random() < self.flip_probability)

    def __iter__(self):  # type: ignore[no-untyped-def]
        iteration = self.start_iteration
        while True:
            first = (iteration * self.world_size + self.rank) * self.batch_size
            yield [(self._image(p), self._flip(p)) for p in range(first, first + self.batch_size)]
            iteration += 1


def collate(
    batch: list[tuple[Tensor, dict[str, Tensor]] | InputError],
) -> tuple[list[Tensor], list[dict[str, Tensor]]] | InputError:
    """Images and targets as two lists (images keep their own sizes), or, when an item is a
    ``InputError`` (``CocoDataset(errors_as_items=True)``), that error, for the training loop to
    raise. An exception raised in a data-loader worker reaches the main process as a new one whose
    message is the worker's whole traceback, without its fields; a returned error crosses intact.
    """
    for item in batch:
        if isinstance(item, InputError):
            return item
    return [image for image, _ in batch], [target for _, target in batch]
