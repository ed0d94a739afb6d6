"""Records that carry results between stages (``Detections``) and to the application
(``Instances``)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor


@dataclass
class Detections:
    """The RoI heads' output for a batch, concatenated over images (grouped by image, best first).

    Boxes are ``(x1, y1, x2, y2)`` in pixels of the resized network input; ``masks`` are mask
    probabilities in each box's frame (D, 1, M, M); ``keypoints`` are ``(x, y, 1)`` in input pixels.
    """

    boxes: Tensor  # (D, 4)
    scores: Tensor  # (D,)
    labels: Tensor  # (D,) int64
    counts: list[int]  # detections per image
    masks: Tensor | None = None  # (D, 1, M, M)
    keypoints: Tensor | None = None  # (D, K, 3)
    keypoint_scores: Tensor | None = None  # (D, K)


@dataclass
class Instances:
    """Instances found in (or drawn on) one image, in that image's pixel coordinates.

    All tensors are on the CPU and convert with ``np.asarray`` (or ``to_numpy()``). Boxes are
    ``(x1, y1, x2, y2)``, pixel corners: a box around pixel (0, 0) alone is ``(0, 0, 1, 1)``.
    ``masks`` are boolean at image resolution. ``keypoints`` are ``(x, y, v)`` with ``v = 1``
    (predicted); ``keypoint_scores`` are the heatmap logits at those points.
    """

    image_size: tuple[int, int]  # (height, width)
    boxes: Tensor  # (N, 4) float32
    scores: Tensor  # (N,) float32
    labels: Tensor  # (N,) int64, index into the model's class names
    label_names: list[str]
    masks: Tensor | None = None  # (N, H, W) bool
    keypoints: Tensor | None = None  # (N, K, 3) float32
    keypoint_scores: Tensor | None = None  # (N, K) float32
    model_version: str = ""

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def __getitem__(self, index: int | slice | Tensor | np.ndarray | list[int]) -> Instances:
        """A subset: an index, a slice, a boolean mask or a list of indices."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        if isinstance(index, (np.ndarray, list)):
            index = torch.as_tensor(index)
        positions = torch.arange(len(self))[index].tolist()
        return replace(
            self,
            boxes=self.boxes[index],
            scores=self.scores[index],
            labels=self.labels[index],
            label_names=[self.label_names[i] for i in positions],
            masks=None if self.masks is None else self.masks[index],
            keypoints=None if self.keypoints is None else self.keypoints[index],
            keypoint_scores=None if self.keypoint_scores is None else self.keypoint_scores[index],
        )

    def to_numpy(self) -> dict[str, Any]:
        """Plain numpy arrays (and lists) for storage and drawing."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.numpy() if isinstance(value, Tensor) else value
        return out

    @staticmethod
    def empty(image_size: tuple[int, int], model_version: str = "") -> Instances:
        return Instances(
            image_size=image_size,
            boxes=torch.zeros(0, 4),
            scores=torch.zeros(0),
            labels=torch.zeros(0, dtype=torch.int64),
            label_names=[],
            model_version=model_version,
        )
