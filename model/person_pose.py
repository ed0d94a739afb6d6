"""Masks of every class and keypoints of each person, from two networks run as one Predictor.

torchvision publishes its COCO weights as two networks: Mask R-CNN (80 classes, masks, no
keypoints) and Keypoint R-CNN (person boxes and 17 keypoints, no masks). ``PersonPosePredictor``
runs both on an image, each backbone once (each ``Predictor`` caches its own FPN features), and
joins their detections (``join_people``):

- every detection of the mask network is kept as it is: box, score, class and mask;
- a person of the mask network takes the keypoints of the keypoint network's person whose box
  overlaps it most (``match_people``: one to one, box IoU at least ``MATCH_IOU``);
- a person that only the keypoint network found becomes a person with that network's box, score
  and keypoints, and the mask the mask head gives on its box (the mask head works on any RoI);
- a person that only the mask network found gets the keypoints the keypoint head gives on its box.

So every person has a mask and keypoints, and no detection of either network is lost. The
instances of other classes carry keypoints with ``v = 0`` (none predicted), so that one
``(N, K, 3)`` tensor holds them all.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from model.box_ops import pairwise_iou
from model.detector import MaskRCNN
from model.precision import ExecutionPolicy
from model.predictor import ImageLike, PredictionCancelled, Predictor
from model.structures import Instances
from model.weights.registry import COMBINED, CombinedWeightsInfo, WeightsInfo

# Box IoU from which a keypoint person and a mask person are the same person: the box heads' NMS
# threshold, so two boxes of one network that overlap this much would have been one detection.
MATCH_IOU = 0.5

# boxes (B, 4) in image pixels -> their masks (B, H, W) bool, from the mask head
MasksInBoxes = Callable[[Tensor], Tensor]
# boxes (B, 4) in image pixels -> keypoints (B, K, 3) (x, y, v) in image pixels and scores (B, K)
KeypointsInBoxes = Callable[[Tensor], tuple[Tensor, Tensor]]


def match_people(mask_boxes: Tensor, keypoint_boxes: Tensor, min_iou: float = MATCH_IOU) -> list[tuple[int, int]]:
    """One-to-one pairs ``(i, j)`` of ``mask_boxes[i]`` (M, 4) and ``keypoint_boxes[j]`` (K, 4),
    ``(x1, y1, x2, y2)`` in the same pixels, greedily by box IoU: the most overlapping pair first,
    then the most overlapping pair of the boxes left, down to ``min_iou``. Sorted by ``i``.

    Greedy by IoU rather than by score: of two people close together, each network's box of one
    person overlaps the other network's box of that person more than the neighbour's.
    """
    if len(mask_boxes) == 0 or len(keypoint_boxes) == 0:
        return []
    iou = pairwise_iou(mask_boxes.float(), keypoint_boxes.float())
    pairs = []
    while True:
        best = int(iou.argmax())
        i, j = divmod(best, iou.shape[1])
        if not iou[i, j] >= min_iou:  # also stops on NaN (degenerate boxes)
            break
        pairs.append((i, j))
        iou[i, :] = -1
        iou[:, j] = -1
    return sorted(pairs)


def join_people(
    found: Instances,
    people: Instances,
    *,
    person: str,
    person_label: int,
    num_keypoints: int,
    masks_in_boxes: MasksInBoxes,
    keypoints_in_boxes: KeypointsInBoxes,
    min_iou: float = MATCH_IOU,
) -> Instances:
    """The mask network's instances ``found`` joined with the keypoint network's persons ``people``
    (same image, image pixels), best first, as the module's docstring says.

    ``person`` is the class name of a person in ``found`` and ``person_label`` its index there.
    ``masks_in_boxes`` segments the boxes only the keypoint network found, ``keypoints_in_boxes``
    poses the persons only the mask network found; each is called once, if there are any. The
    keypoints are ``(N, num_keypoints, 3)``, ``v = 0`` on the rows that are no person; the model
    version is ``found``'s.
    """
    rows = [i for i, name in enumerate(found.label_names) if name == person]
    pairs = match_people(found.boxes[rows], people.boxes, min_iou)
    empty_pose = torch.zeros(len(people), num_keypoints, 3)
    people_keypoints = people.keypoints if people.keypoints is not None else empty_pose
    people_scores = people.keypoint_scores if people.keypoint_scores is not None else empty_pose[..., 0]
    keypoints = torch.zeros(len(found), num_keypoints, 3)
    keypoint_scores = torch.zeros(len(found), num_keypoints)
    for i, j in pairs:
        keypoints[rows[i]], keypoint_scores[rows[i]] = people_keypoints[j], people_scores[j]
    matched_rows = {rows[i] for i, _ in pairs}
    mask_only = torch.tensor([row for row in rows if row not in matched_rows], dtype=torch.int64)
    if len(mask_only):
        keypoints[mask_only], keypoint_scores[mask_only] = keypoints_in_boxes(found.boxes[mask_only])

    matched_people = {j for _, j in pairs}
    extra = torch.tensor([j for j in range(len(people)) if j not in matched_people], dtype=torch.int64)
    masks = found.masks
    if masks is not None and len(extra):
        masks = torch.cat([masks, masks_in_boxes(people.boxes[extra])])
    scores = torch.cat([found.scores, people.scores[extra]])
    joined = Instances(
        image_size=found.image_size,
        boxes=torch.cat([found.boxes, people.boxes[extra]]),
        scores=scores,
        labels=torch.cat([found.labels, torch.full((len(extra),), person_label, dtype=found.labels.dtype)]),
        label_names=[*found.label_names, *(person for _ in range(len(extra)))],
        masks=masks,
        keypoints=torch.cat([keypoints, people_keypoints[extra]]),
        keypoint_scores=torch.cat([keypoint_scores, people_scores[extra]]),
        model_version=found.model_version,
    )
    return joined[torch.argsort(scores, descending=True, stable=True)]


class PersonPosePredictor:
    """Two ``Predictor``s on one device run as one: ``masks`` (a Mask R-CNN that knows ``person``)
    and ``keypoints`` (a Keypoint R-CNN of persons); it offers what callers use of a ``Predictor``.

    ``predict`` runs each backbone once and joins the detections (``join_people``); the heads run
    again, once per network, on the boxes the other network missed (``Predictor.predict_in_boxes``,
    from the features each ``Predictor`` caches). ``predict_in_box`` is the mask network's, with
    the keypoint network's keypoints when the box is a person. Each ``Predictor`` needs
    ``feature_cache_size >= 1`` for the joining not to run its backbone again (``from_registry``
    sees to it). ``cancel()`` stops the prediction at the next stage boundary of either network or
    of the joining.
    """

    def __init__(
        self,
        masks: Predictor,
        keypoints: Predictor,
        *,
        person: str = "person",
        min_iou: float = MATCH_IOU,
        name: str = "",
    ) -> None:
        if person not in masks.class_names[1:]:
            raise ValueError(f"the mask network does not know {person!r}; it knows {list(masks.class_names[1:])}")
        if not masks.model.config.mask_on:
            raise ValueError("the mask network has no mask head")
        if not keypoints.has_keypoints(person):
            raise ValueError(f"the keypoint network gives no keypoints for {person!r}")
        if masks.device != keypoints.device:
            raise ValueError(f"the networks are on two devices, {masks.device} and {keypoints.device}")
        self.masks, self.keypoints = masks, keypoints
        self.person, self.min_iou = person, min_iou
        # "name@<mask file hash>+<keypoint file hash>"; without a name both versions in full
        hashes = [version.rpartition("@")[2] for version in (masks.model_version, keypoints.model_version)]
        self.model_version = (
            f"{name}@{'+'.join(hashes)}" if name else f"{masks.model_version}+{keypoints.model_version}"
        )
        self._lock = threading.Lock()
        self._cancelled = threading.Event()

    @classmethod
    def from_registry(
        cls,
        info: CombinedWeightsInfo,
        device: str | torch.device = "auto",
        *,
        feature_cache_size: int = 2,
        **options: Any,
    ) -> PersonPosePredictor:
        """Both networks of a combined registry entry, each file downloaded once and hash-checked
        (``model.weights.download.fetch``); ``options`` are ``Predictor``'s, given to both."""
        cache = max(1, feature_cache_size)  # the joining reruns the heads on the image's features
        masks = Predictor(info.masks, device, feature_cache_size=cache, **options)
        keypoints = Predictor(info.keypoints, masks.device, feature_cache_size=cache, **options)
        return cls(masks, keypoints, person=info.person, name=info.name)

    # -- what a Predictor offers --------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.masks.device

    @property
    def execution(self) -> str:
        return self.masks.execution

    @property
    def policy(self) -> ExecutionPolicy:
        return self.masks.policy

    @property
    def model(self) -> MaskRCNN:
        """The mask network: the boxes, classes and masks are its (``keypoints.model`` the other)."""
        return self.masks.model

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.masks.class_names

    @property
    def keypoint_names(self) -> tuple[str, ...]:
        return self.keypoints.keypoint_names

    @property
    def keypoint_skeleton(self) -> tuple[tuple[int, int], ...]:
        return self.keypoints.keypoint_skeleton

    def has_keypoints(self, label: int | str) -> bool:
        """Whether instances of this class get keypoints: persons only."""
        if isinstance(label, str):
            return label == self.person
        return 0 < int(label) < len(self.class_names) and self.class_names[int(label)] == self.person

    def predict(self, image: ImageLike, *, score_threshold: float | None = None) -> Instances:
        """Instances in one image (as ``Predictor.predict``), persons with masks and keypoints; the
        image's features stay cached in both networks for ``predict_in_box``."""
        with self._running():
            found = self.masks.predict(image, score_threshold=score_threshold)
            self._check_cancelled()
            people = self.keypoints.predict(image, score_threshold=score_threshold)
            self._check_cancelled()
            joined = join_people(
                found,
                people,
                person=self.person,
                person_label=self.class_names.index(self.person),
                num_keypoints=len(self.keypoint_names),
                masks_in_boxes=functools.partial(self._masks_in_boxes, image),
                keypoints_in_boxes=functools.partial(self._keypoints_in_boxes, image),
                min_iou=self.min_iou,
            )
            joined.model_version = self.model_version
            return joined

    def predict_batch(self, images: Sequence[ImageLike], *, score_threshold: float | None = None) -> list[Instances]:
        """Instances in several images, one after the other."""
        return [self.predict(image, score_threshold=score_threshold) for image in images]

    def predict_in_box(self, image: ImageLike, box: Sequence[float], label: int | str | None = None) -> Instances:
        """The mask network's ``predict_in_box``; a box that is (or is classified as) a person also
        gets the keypoint network's keypoints on it. Both reuse their cached features."""
        with self._running():
            found = self.masks.predict_in_box(image, box, label)
            self._check_cancelled()
            if found.label_names[0] == self.person:
                pose = self.keypoints.predict_in_box(image, box, self.person)
                found.keypoints, found.keypoint_scores = pose.keypoints, pose.keypoint_scores
            found.model_version = self.model_version
            return found

    def prepare(self, image: ImageLike) -> None:
        """Both networks' features of ``image`` cached (``Predictor.prepare``): a box then runs heads only."""
        with self._running():
            self.masks.prepare(image)
            self._check_cancelled()
            self.keypoints.prepare(image)

    def cancel(self) -> None:
        """Stop the running prediction (if any) at its next stage boundary; thread-safe."""
        self._cancelled.set()
        self.masks.cancel()
        self.keypoints.cancel()

    def clear_cache(self) -> None:
        self.masks.clear_cache()
        self.keypoints.clear_cache()

    # -- internals ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        """One prediction at a time. Each network clears its own cancel flag when it starts, so a
        cancel between two of their calls is kept here."""
        with self._lock:
            self._cancelled.clear()
            yield

    def _check_cancelled(self) -> None:
        if self._cancelled.is_set():
            self._cancelled.clear()
            raise PredictionCancelled()

    def _masks_in_boxes(self, image: ImageLike, boxes: Tensor) -> Tensor:
        self._check_cancelled()
        found = self.masks.predict_in_boxes(image, boxes, self.person)
        assert found.masks is not None  # checked in __init__: the mask network has a mask head
        return found.masks

    def _keypoints_in_boxes(self, image: ImageLike, boxes: Tensor) -> tuple[Tensor, Tensor]:
        self._check_cancelled()
        found = self.keypoints.predict_in_boxes(image, boxes, self.person)
        assert found.keypoints is not None and found.keypoint_scores is not None
        return found.keypoints, found.keypoint_scores


def open_predictor(
    weights: str | Path | WeightsInfo | CombinedWeightsInfo | MaskRCNN,
    device: str | torch.device = "auto",
    **options: Any,
) -> Predictor | PersonPosePredictor:
    """The predictor for ``weights``: a combined registry entry (``COMBINED``) gives a
    ``PersonPosePredictor``, anything else (a registry name, a file, a module) a ``Predictor``.
    ``options`` are ``Predictor``'s."""
    if isinstance(weights, str) and weights in COMBINED:
        weights = COMBINED[weights]
    if isinstance(weights, CombinedWeightsInfo):
        return PersonPosePredictor.from_registry(weights, device, **options)
    return Predictor(weights, device, **options)
