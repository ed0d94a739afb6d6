"""``Predictor``: the inference API of the GUI and the CLI.

``predict(image)`` proposes instances; ``predict_in_box(image, box)`` segments a user-drawn box
from the image's cached FPN features, running only the RoI heads (milliseconds on a CPU).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from model.detector import MaskRCNN
from model.devices import choose_device
from model.precision import choose_policy, fold_batch_norms
from model.precision_check import CHECK_IMAGES, Tolerances, compare, read_verdict, remember_verdict, verdict_key
from model.structures import Detections, Instances
from model.transform import ImageBatch, paste_masks_in_image, rescale_boxes, rescale_keypoints, rescale_ratios
from model.weights.registry import WeightsInfo
from model.weights.resolve import load_model

# upper bound on the float32 masks pasted at once (elements), to bound memory on large images
_PASTE_CHUNK_ELEMENTS = 1 << 26

ImageLike = np.ndarray | Tensor


class PredictionCancelled(Exception):
    """Raised by a prediction that ``Predictor.cancel()`` stopped."""

    def __init__(self) -> None:
        super().__init__("prediction cancelled")


@dataclass
class _CachedImage:
    batch: ImageBatch
    features: list[Tensor]


class Predictor:
    """A model ready for inference on one device.

    Args:
        weights: a registry name (``"maskrcnn_resnet50_fpn.COCO_V1"``) or entry (``WeightsInfo``),
            a ``.pth`` / ``.safetensors`` path, or a ``MaskRCNN`` module.
        device: ``"auto"`` (CUDA, then MPS, then CPU) or a torch device.
        score_threshold: detections below it are dropped (default: the model's
            ``box_score_thresh``).
        precision: ``"auto"`` (float16 on CUDA, bfloat16 on a CPU with native bfloat16, else
            float32), ``"fp32"``, ``"bf16"`` or ``"fp16"``: the autocast of ``model.precision``.
        mixed_precision: the same choice as a flag, for callers that have one (the training
            loop's evaluation): True the device's half precision, False float32; None: ``precision``.
        channels_last: NHWC convolutions (default: on for CUDA and CPU, where oneDNN is faster).
        fold_batch_norm: fold frozen batch norm into the convolutions (``model.precision``).
            Default: when the Predictor loaded the weights itself; a module passed in is the
            caller's (the training loop keeps training the one it evaluates), so only on request.
        feature_cache_size: images whose FPN features are kept for ``predict_in_box``.
        overrides: ``build_model`` keyword arguments when loading weights.

    Predictions run one at a time (thread-safe). ``cancel()``, from any thread, stops the running
    prediction at the next stage boundary (preprocessing, backbone, proposals, heads, paste-back)
    with ``PredictionCancelled``.
    """

    def __init__(
        self,
        weights: str | Path | WeightsInfo | MaskRCNN,
        device: str | torch.device = "auto",
        *,
        score_threshold: float | None = None,
        precision: str = "auto",
        mixed_precision: bool | None = None,
        channels_last: bool | None = None,
        fold_batch_norm: bool | None = None,
        feature_cache_size: int = 2,
        progress: bool = True,
        **overrides: Any,
    ) -> None:
        loaded_here = not isinstance(weights, MaskRCNN)
        model = load_model(weights, progress=progress, **overrides) if loaded_here else weights
        self.device = choose_device(device)
        if mixed_precision is not None:
            precision = ("fp16" if self.device.type == "cuda" else "bf16") if mixed_precision else "fp32"
        self.policy = choose_policy(self.device, precision, channels_last=channels_last)
        # bfloat16 that ``auto`` chose on the CPU is still to be checked against float32 for these
        # weights (``settle_precision``); an explicit choice is the caller's
        self.precision_settled = not (precision == "auto" and self.policy.precision == "bf16")
        self.precision_note = ""
        self.mixed_precision = self.policy.autocast_dtype is not None
        self.channels_last = self.policy.channels_last
        model.eval()
        if fold_batch_norm is None:
            fold_batch_norm = loaded_here
        # folded in float32 on the weights as loaded, before any cast or move
        self.folded_norms = fold_batch_norms(model) if fold_batch_norm else 0
        # the Predictor owns the module from here: device and memory format are its choice
        self.model = model.to(self.device).to(memory_format=self.policy.memory_format)
        self.score_threshold = model.config.box_score_thresh if score_threshold is None else score_threshold
        self.model_version: str = getattr(model, "weights_version", "") or "unversioned"
        self._cache: OrderedDict[str, _CachedImage] = OrderedDict()
        self._cache_size = feature_cache_size
        self._lock = threading.Lock()
        self._cancelled = threading.Event()

    @property
    def execution(self) -> str:
        """What runs, for the status bar: ``"cpu · bf16"``, ``"cuda · fp16"``, ``"cpu · fp32"``."""
        return self.policy.description

    # -- what the model knows ---------------------------------------------------------------

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.model.config.class_names

    @property
    def keypoint_names(self) -> tuple[str, ...]:
        return self.model.config.keypoint_names if self.model.config.keypoint_on else ()

    @property
    def keypoint_skeleton(self) -> tuple[tuple[int, int], ...]:
        return self.model.config.keypoint_skeleton

    def has_keypoints(self, label: int | str) -> bool:
        """Whether instances of this class get keypoints (every foreground class of a keypoint model;
        not a category the model does not know)."""
        if isinstance(label, str) and label not in self.class_names:
            return False
        return bool(self.keypoint_names) and self._label_index(label) > 0

    # -- inference --------------------------------------------------------------------------

    def predict(self, image: ImageLike, *, score_threshold: float | None = None) -> Instances:
        """Instances in one image (H x W x 3 uint8 RGB array, or a (3, H, W) tensor, float in
        [0, 1] or uint8). The image's features stay cached for ``predict_in_box``."""
        with self._running():
            cached = self._features(image)
            detections = self.model.detect(cached.features, cached.batch)
            self._check_cancelled()
            return self._instances(detections, cached.batch, 0, score_threshold)

    def predict_batch(self, images: Sequence[ImageLike], *, score_threshold: float | None = None) -> list[Instances]:
        """Instances in several images, run as one batch (no feature caching)."""
        if not images:
            return []
        with self._running():
            batch = self.model.preprocess([self._to_tensor(image) for image in images])
            self._check_cancelled()
            features = self.model.extract_features(batch)
            self._check_cancelled()
            detections = self.model.detect(features, batch)
            self._check_cancelled()
            return [self._instances(detections, batch, i, score_threshold) for i in range(len(images))]

    def predict_in_box(self, image: ImageLike, box: Sequence[float], label: int | str | None = None) -> Instances:
        """One instance for a user-drawn box ``(x1, y1, x2, y2)`` in image pixels.

        Runs only the RoI heads on the image's cached features (the backbone runs only if the
        image is not cached). Without ``label`` the box head classifies the box; the score is the
        class probability. The box is kept as drawn (clipped to the image, not regressed).

        A category name the model does not know (a user's ``"cat"``) is segmented class-agnostic:
        the mask head needs no recognising, only a box (docs/decisions/0016). The mask is that of
        the box's most probable class, the score the probability that the box holds an object of
        any class (one less the background's), ``labels`` the class whose mask it is, and
        ``label_names`` the caller's category; the model's keypoints belong to its own classes, so
        there are none. A class index out of range is still an error.
        """
        with self._running():
            cached = self._features(image)
            batch, heads = cached.batch, self.model.roi_heads
            original = batch.original_sizes[0]
            x1, y1, x2, y2 = (float(v) for v in box)
            x1, x2 = sorted((min(max(x1, 0.0), original[1]), min(max(x2, 0.0), original[1])))
            y1, y2 = sorted((min(max(y1, 0.0), original[0]), min(max(y2, 0.0), original[0])))
            if x2 - x1 < 1 or y2 - y1 < 1:
                raise ValueError(f"box {tuple(box)} covers less than a pixel of the {original[1]}x{original[0]} image")
            box_image = torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32, device=self.device)
            box_input = rescale_boxes(box_image, rescale_ratios(original, batch.sizes[0], self.device))

            class_logits, _ = heads.classify(cached.features, [box_input])
            probabilities = F.softmax(class_logits.float(), dim=-1)[0]
            unknown = isinstance(label, str) and label not in self.class_names
            if label is None or unknown:
                label_index = int(probabilities[1:].argmax()) + 1
            else:
                label_index = self._label_index(label)
            labels = torch.tensor([label_index], device=self.device)
            score = 1 - probabilities[:1] if unknown else probabilities[label_index : label_index + 1]
            detections = Detections(boxes=box_input, scores=score, labels=labels, counts=[1])
            if heads.has_mask:
                detections.masks = heads.predict_masks(cached.features, [box_input], labels)
            if heads.has_keypoint and not unknown and self.has_keypoints(label_index):
                detections.keypoints, detections.keypoint_scores = heads.predict_keypoints(cached.features, [box_input])
            self._check_cancelled()
            instances = self._instances(detections, batch, 0, score_threshold=0.0)
            instances.boxes = box_image.cpu()  # as drawn, not mapped there and back
            if unknown:
                instances.label_names = [str(label)]
            return instances

    def predict_in_boxes(self, image: ImageLike, boxes: Tensor, label: int | str) -> Instances:
        """Instances of the class ``label`` (one the model knows) in ``boxes`` (N, 4) ``(x1, y1,
        x2, y2)`` in image pixels: the mask and keypoint heads on the image's cached features, with
        no classifying (scores are 1) and the boxes kept as given (clipped to the image). For
        boxes another model found (``model.person_pose``); a box a person draws is
        ``predict_in_box``'s."""
        with self._running():
            cached = self._features(image)
            batch, heads = cached.batch, self.model.roi_heads
            height, width = batch.original_sizes[0]
            box_image = boxes.to(self.device, torch.float32).reshape(-1, 4).clone()
            box_image[:, 0::2] = box_image[:, 0::2].clamp(0, width)
            box_image[:, 1::2] = box_image[:, 1::2].clamp(0, height)
            box_input = rescale_boxes(box_image, rescale_ratios((height, width), batch.sizes[0], self.device))
            count = box_input.shape[0]
            labels = torch.full((count,), self._label_index(label), dtype=torch.int64, device=self.device)
            detections = Detections(box_input, box_input.new_ones(count), labels, counts=[count])
            if heads.has_mask and count:
                detections.masks = heads.predict_masks(cached.features, [box_input], labels)
            if heads.has_keypoint and count and self.has_keypoints(label):
                detections.keypoints, detections.keypoint_scores = heads.predict_keypoints(cached.features, [box_input])
            self._check_cancelled()
            instances = self._instances(detections, batch, 0, score_threshold=0.0)
            instances.boxes = box_image.cpu()
            return instances

    def prepare(self, image: ImageLike) -> None:
        """Runs the backbone on ``image`` and caches its features, so that the first
        ``predict_in_box`` on it (the box or click a person is about to give) runs only the RoI
        heads: the app's model thread calls it as an image opens. Cancellable as a prediction is."""
        with self._running():
            self._features(image)

    def cancel(self) -> None:
        """Stop the running prediction (if any) at its next stage boundary; thread-safe."""
        self._cancelled.set()

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def settle_precision(
        self, images: Sequence[ImageLike], tolerances: Tolerances | None = None, verdicts: Path | None = None
    ) -> str:
        """Keeps the bfloat16 that ``auto`` chose only if it agrees with float32 on these weights
        (``model.precision_check``): decided on the first ``CHECK_IMAGES`` of ``images`` (the first
        images the caller proposes on) once per weights version, processor and torch, and kept in
        ``verdicts`` (default: beside the downloaded weights). Falls back to float32 where it does not
        agree. Returns a line saying what was decided ("" when nothing was to decide), also kept
        as ``precision_note``. Weights without a version (a module handed over) are not judged."""
        if self.precision_settled or not images:
            return ""
        self.precision_settled = True
        if self.model_version == "unversioned":
            return ""
        key = verdict_key(self.model_version)
        verdict = read_verdict(key, verdicts)
        bf16, fp32 = self.policy, replace(self.policy, autocast_dtype=None)
        if verdict is None:
            sample = list(images[:CHECK_IMAGES])
            fast = [self.predict(image) for image in sample]
            self.policy = fp32
            self.clear_cache()
            exact = [self.predict(image) for image in sample]
            self.policy = bf16
            self.clear_cache()
            agreement = compare(exact, fast)
            verdict = "bf16" if agreement.passes(tolerances or Tolerances()) else "fp32"
            remember_verdict(key, verdict, agreement, verdicts)
            detail = f" ({agreement.summary()})"
        else:
            detail = " (decided before for these weights)"
        if verdict == "fp32":
            self.policy = fp32
            self.mixed_precision = False
            self.clear_cache()
            self.precision_note = f"bf16 disagreed with fp32 on {self.model_version}: running fp32{detail}"
        else:
            self.precision_note = f"bf16 agrees with fp32 on {self.model_version}{detail}"
        return self.precision_note

    # -- internals --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        """One prediction at a time, in inference mode, under the policy's autocast (the model
        takes boxes, scores, NMS, paste-back and keypoints out of it, in float32)."""
        with self._lock, torch.inference_mode(), self.policy.autocast():
            self._cancelled.clear()
            yield

    def _check_cancelled(self) -> None:
        if self._cancelled.is_set():
            self._cancelled.clear()
            raise PredictionCancelled()

    def _features(self, image: ImageLike) -> _CachedImage:
        key = _fingerprint(image)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        self._check_cancelled()
        batch = self.model.preprocess([self._to_tensor(image)])
        self._check_cancelled()
        features = self.model.extract_features(batch)
        self._check_cancelled()
        cached = _CachedImage(batch=batch, features=features)
        if self._cache_size > 0:
            self._cache[key] = cached
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return cached

    def _to_tensor(self, image: ImageLike) -> Tensor:
        """(3, H, W) float32 in [0, 1] on the device; uint8 crosses to the device as uint8."""
        if isinstance(image, np.ndarray):
            if image.ndim == 2:
                image = np.repeat(image[:, :, None], 3, axis=2)
            if image.ndim != 3 or image.shape[2] not in (3, 4):
                raise ValueError(f"expected an H x W x 3 RGB image, got shape {image.shape}")
            pixels = np.ascontiguousarray(image[:, :, :3])
            if not pixels.flags.writeable:  # np.asarray(a PIL image) is read-only, which torch warns of
                pixels = pixels.copy()
            tensor = torch.from_numpy(pixels).to(self.device).permute(2, 0, 1)
        elif isinstance(image, Tensor):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"expected a (3, H, W) image tensor, got shape {tuple(image.shape)}")
            tensor = image.to(self.device)
        else:
            raise TypeError(f"expected a numpy array or a tensor, got {type(image).__name__}")
        if tensor.dtype == torch.uint8:
            return tensor.float().div_(255)
        return tensor.float()

    def _instances(
        self, detections: Detections, batch: ImageBatch, index: int, score_threshold: float | None
    ) -> Instances:
        """Detections of image ``index`` in its own pixels, masks pasted and thresholded."""
        start = sum(detections.counts[:index])
        part = slice(start, start + detections.counts[index])
        threshold = self.score_threshold if score_threshold is None else score_threshold
        scores = detections.scores[part].float()
        keep = (scores >= threshold).nonzero().squeeze(1)
        original = batch.original_sizes[index]
        ratios = rescale_ratios(batch.sizes[index], original, scores.device)
        boxes = rescale_boxes(detections.boxes[part].float()[keep], ratios)
        labels = detections.labels[part][keep]

        masks = keypoints = keypoint_scores = None
        if detections.masks is not None:
            masks = self._paste(detections.masks[part][keep], boxes, original)
        if detections.keypoints is not None and detections.keypoint_scores is not None:
            keypoints = rescale_keypoints(detections.keypoints[part][keep].float(), ratios).cpu()
            keypoint_scores = detections.keypoint_scores[part][keep].float().cpu()
        labels_cpu = labels.cpu()
        return Instances(
            image_size=original,
            boxes=boxes.cpu(),
            scores=scores[keep].cpu(),
            labels=labels_cpu,
            label_names=[self.class_names[i] for i in labels_cpu.tolist()],
            masks=masks,
            keypoints=keypoints,
            keypoint_scores=keypoint_scores,
            model_version=self.model_version,
        )

    def _paste(self, masks: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
        """(N, 1, M, M) probabilities -> (N, H, W) bool on the CPU, pasted on the device in chunks."""
        height, width = size
        out = torch.empty(masks.shape[0], height, width, dtype=torch.bool)
        chunk = max(1, _PASTE_CHUNK_ELEMENTS // max(1, height * width))
        threshold = self.model.config.mask_threshold
        for start in range(0, masks.shape[0], chunk):
            self._check_cancelled()
            end = start + chunk
            pasted = paste_masks_in_image(masks[start:end].float(), boxes[start:end], size)
            out[start:end].copy_(pasted[:, 0] >= threshold)
        return out

    def _label_index(self, label: int | str) -> int:
        if isinstance(label, str):
            if label not in self.class_names:
                raise ValueError(f"unknown category {label!r}; the model knows {list(self.class_names[1:])}")
            return self.class_names.index(label)
        if not 0 < int(label) < len(self.class_names):
            raise ValueError(f"category index {label} out of range 1..{len(self.class_names) - 1}")
        return int(label)


def _fingerprint(image: ImageLike) -> str:
    """Content hash of an image (about 1 ms per megapixel): the feature cache's key."""
    if isinstance(image, Tensor):
        array = image.detach().cpu().contiguous().numpy()
    else:
        array = np.ascontiguousarray(image)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.shape}{array.dtype}".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()
