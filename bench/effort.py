"""Human effort per label: a simulated annotator labels a COCO ground truth with the app's tools and
counts what it costs, in actions and seconds, next to labelling it by hand the labelme way (polygons
and keypoint clicks) in the same run. ``--json`` prints one JSON object as the last line.

    python bench/effort.py GT.json --images DIR (--weights W | --proposals RESULTS.json | --manual)
                           [--iou 0.85] [--json] [--rounds K [--round-size N] [--order ORDER] [--fixed-set M]]

Per ground-truth instance the person takes the cheapest way the app offers to a mask of IoU >= --iou
with the right category: accept the matching proposal (+1 to change its category) and correct it
with brush or eraser strokes; click to segment; a box and box to mask, then strokes; or a polygon.
Shown proposals no instance uses cost a reject each; keypoints a drag each where the proposed one is
off by more than an OKS-based tolerance, and clicks to set visibility. More than 20 actions to reach
the IoU is a failure; an instance no route reaches counts 20 actions and is reported unreached.
The person sees the ground truth only through where it clicks and draws; every mask is what the
app's own code makes of that (``Predictor``, ``predict_in_box``, the brush's ``rasterise_stroke``,
the store's polygons). Rules and cost table, with sources: docs/decisions/0012-effort-costs.md.
"""

from __future__ import annotations

import argparse
import enum
import json
import math
import statistics
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from annotator import masks  # noqa: E402
from annotator.interchange import finite_number, read_json  # noqa: E402
from annotator.prompts import PromptKind, detection_at, proposals_for  # noqa: E402
from annotator.proposals import Proposal, to_proposals  # noqa: E402
from annotator.review import DEFAULT_SCORE_THRESHOLD  # noqa: E402
from annotator.strokes import correction_stroke, next_click, rasterise_stroke  # noqa: E402
from model.data import CocoData, load_coco  # noqa: E402
from model.errors import InputError  # noqa: E402
from model.evaluation import oks_sigmas  # noqa: E402

MAX_ACTIONS = 20  # per instance, to reach the IoU (NoC@20, as interactive segmentation reports)


class Action(enum.StrEnum):
    """What a person does, one unit of effort; seconds in ``SECONDS``."""

    VERDICT = "accept/reject"  # Enter or Delete on a proposal, or the click that selects it to correct it
    CLICK = "click"  # click to segment, pick a category, place a keypoint, cycle its visibility
    VERTEX = "polygon vertex"  # a vertex after the first, or closing the polygon
    STROKE = "stroke"  # one drag of the brush or the eraser
    BOX = "box"
    DRAG = "keypoint drag"


# docs/decisions/0012-effort-costs.md: Card, Moran & Newell's keystroke-level model (1980) for the
# elementary actions, Papadopoulos et al. (2017) for a box
SECONDS = {
    Action.VERDICT: 1.63,  # M + K: judge the proposal, press a key
    Action.CLICK: 2.65,  # M + P + B + B: decide where, point, click
    Action.VERTEX: 1.3,  # P + B + B: the next point along an outline already decided on
    Action.STROKE: 3.75,  # M + P + B + P + B: decide, point, press, drag, release
    Action.BOX: 7.0,  # a tight box by extreme clicking, Papadopoulos et al. 2017
    Action.DRAG: 3.75,  # as a stroke
}


def seconds(actions: list[Action]) -> float:
    return sum(SECONDS[a] for a in actions)


@dataclass
class Truth:
    """One ground-truth instance: its mask (``H x W`` bool), category id, and keypoints (``K x 3``,
    COCO's ``x, y, v``; None for a category without keypoints)."""

    mask: np.ndarray
    category_id: int
    keypoints: np.ndarray | None


@dataclass
class Candidate:
    """A proposal as the person sees it: mask, category id (None for a class the data set does
    not have), score (None: always shown) and keypoints (``K x 3`` or None)."""

    mask: np.ndarray
    category_id: int | None
    score: float | None
    keypoints: np.ndarray | None

    @property
    def shown(self) -> bool:
        return self.score is None or self.score >= DEFAULT_SCORE_THRESHOLD


@dataclass
class Attempt:
    """One route for one instance: its actions (at most ``MAX_ACTIONS`` for the mask, keypoints on
    top), the mask IoU it ended at, and whether that reached the target."""

    route: str
    actions: list[Action]
    iou: float
    reached: bool


# --- the pieces: IoU, strokes, polygons, keypoints ------------------------------------------------


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int(np.count_nonzero(a | b))
    return int(np.count_nonzero(a & b)) / union if union else 1.0


def correct_with_strokes(mask: np.ndarray, target: np.ndarray, iou: float, budget: int) -> tuple[int, float]:
    """Brush and eraser strokes (``annotator.strokes.correction_stroke``, painted by the brush's
    own arithmetic) until ``mask`` reaches ``iou`` with ``target``, at most ``budget`` of them.
    Returns the strokes made and the IoU they reached (under ``iou`` when the budget ran out)."""
    reached = mask_iou(mask, target)
    count = 0
    while reached < iou and count < budget:
        stroke = correction_stroke(mask, target)
        if stroke is None:
            break
        painted = rasterise_stroke(mask.shape, stroke.points, stroke.radius)
        mask = mask & ~painted if stroke.erase else mask | painted
        count += 1
        reached = mask_iou(mask, target)
    return count, reached


# tolerances a careful polygon annotator tries, pixels: 8 steps an octave from 64 to 1/4 pixel
_TOLERANCES = [64.0 * 2 ** (-k / 8) for k in range(65)]


def fewest_vertex_polygons(target: np.ndarray, iou: float) -> tuple[list[np.ndarray], float]:
    """The polygons, one a part, with the fewest vertices this finds whose rasterisation (the
    store's, ``masks.from_polygons``) reaches ``iou`` with ``target`` (``H x W`` bool); each
    polygon is ``N x 2`` vertices (x, y). The parts are the mask's outlines (``masks.polygons_json``,
    holes filled), largest first, as many as the exact outlines need to reach ``iou``. They are
    simplified (Douglas-Peucker) at the one tolerance, of a fine range, that reaches ``iou`` with
    the fewest vertices, then vertices are dropped one at a time while the IoU stays reached.
    Returns the polygons and their IoU: ``[]`` and the IoU of the exact outlines when even those
    fall short (holes, parts too small)."""
    rows, columns = np.flatnonzero(target.any(axis=1)), np.flatnonzero(target.any(axis=0))
    y0, x0 = max(rows[0] - 2, 0), max(columns[0] - 2, 0)  # the work is done on the object's box
    crop = target[y0 : rows[-1] + 3, x0 : columns[-1] + 3]
    outlines = [np.asarray(p, np.float32).reshape(-1, 2) for p in json.loads(masks.polygons_json(masks.encode(crop)))]
    outlines.sort(key=lambda points: -abs(cv2.contourArea(points)))

    def rasterised_iou(polygons: list[np.ndarray]) -> float:
        flat = [p.reshape(-1).tolist() for p in polygons]
        return mask_iou(masks.decode(masks.from_polygons(flat, *crop.shape)), crop)

    exact = 0.0
    for count in range(1, len(outlines) + 1):
        exact = rasterised_iou(outlines[:count])
        if exact >= iou:
            outlines = outlines[:count]
            break
    else:
        return [], exact
    best, best_iou = outlines, exact
    for tolerance in _TOLERANCES:
        simplified = [cv2.approxPolyDP(p.reshape(-1, 1, 2), tolerance, True).reshape(-1, 2) for p in outlines]
        if any(len(p) < 3 for p in simplified) or sum(map(len, simplified)) >= sum(map(len, best)):
            continue
        reached = rasterised_iou(simplified)
        if reached >= iou:
            best, best_iou = simplified, reached
    while True:  # a vertex whose removal keeps the IoU reached goes, the one that keeps the most first
        fewer = [[*best[:i], np.delete(p, k, 0), *best[i + 1 :]] for i, p in enumerate(best) for k in range(len(p))]
        fewer = [f for f in fewer if min(map(len, f)) >= 3]
        reached, polygons = max(((rasterised_iou(f), f) for f in fewer), key=lambda t: t[0], default=(0.0, []))
        if reached < iou:
            return [p + (x0, y0) for p in best], best_iou
        best, best_iou = polygons, reached


def polygon_actions(polygons: list[np.ndarray]) -> list[Action]:
    """Drawing ``polygons`` as one instance: per polygon a click for its first vertex, a vertex for
    each other one and one to close it; a click to join each further part to the instance."""
    actions: list[Action] = []
    for index, polygon in enumerate(polygons):
        actions += [Action.CLICK] * (1 + (index > 0)) + [Action.VERTEX] * len(polygon)
    return actions


def keypoint_tolerance(area: float, sigma: float, iou: float) -> float:
    """The distance, pixels, at which a keypoint's OKS term ``exp(-d^2 / (2 s^2 k^2))`` (s^2 the
    instance's area, k = 2 sigma) falls to ``iou``: keypoints are held to the mask's standard."""
    return 2 * sigma * math.sqrt(area) * math.sqrt(2 * math.log(1 / iou))


def keypoint_actions(truth: np.ndarray | None, proposed: np.ndarray | None, tolerances: np.ndarray) -> list[Action]:
    """Keypoint corrections from ``proposed`` to ``truth`` (``K x 3``; proposed None: none there,
    every labelled keypoint is placed by a click, plus a click for each occluded one). A keypoint
    placed or left farther than its tolerance (``K``, pixels) from the truth costs a drag;
    visibility costs the right-clicks of the tool's cycle, and a cycle through 0 clears the point."""
    if truth is None:
        return []
    proposed = np.zeros_like(truth) if proposed is None else proposed
    actions: list[Action] = []
    for (x, y, v), (px, py, pv), tolerance in zip(truth, proposed, tolerances):
        v, pv = int(v), int(pv)
        if pv <= 0:
            actions += [Action.CLICK] * (v > 0) + [Action.CLICK] * (v == 1)  # placed visible, then occluded
            continue
        actions += [Action.CLICK] * ((pv - v) % 3)  # right-clicks cycle 2 -> 1 -> 0 -> 2
        cleared = pv == 1 and v == 2  # 1 -> 0 -> 2: the position went with the 0
        if v > 0 and (cleared or math.hypot(px - x, py - y) > tolerance):
            actions.append(Action.DRAG)
    return actions


# --- the simulated person ---------------------------------------------------------------------------

BoxToMask = Callable[[tuple[float, float, float, float], int], Candidate | None]


@dataclass
class ImageWork:
    """One image as the person meets it: its ground truth, the proposals at every score (those under
    the threshold are hidden but click to segment picks them), and box to mask when a model is loaded
    (box ``x1, y1, x2, y2`` and category id in, the instance the app adds out)."""

    truths: list[Truth]
    candidates: list[Candidate]
    box_to_mask: BoxToMask | None = None


@dataclass
class Arm:
    """What one way of working spent: the attempt taken for each instance, rejects of proposals no
    instance used, and the category the tools draw with now (the app's current category)."""

    attempts: list[Attempt] = field(default_factory=list)
    rejects: int = 0
    current_category: int | None = None

    def pick(self, category_id: int) -> list[Action]:
        """A click in the category panel unless ``category_id`` is current already."""
        return [] if category_id == self.current_category else [Action.CLICK]

    def summary(self) -> dict[str, Any]:
        count = max(len(self.attempts), 1)
        actions = [len(a.actions) for a in self.attempts]
        kinds = Counter(action for a in self.attempts for action in a.actions) + Counter({Action.VERDICT: self.rejects})
        return {
            "actions_per_instance": sum(kinds.values()) / count,
            "actions_median": statistics.median(actions) if actions else 0.0,
            "seconds_per_instance": sum(SECONDS[kind] * n for kind, n in kinds.items()) / count,
            "unreached": sum(not a.reached for a in self.attempts),
            "rejects": self.rejects,
            "routes": {route: sum(a.route == route for a in self.attempts) / count for route in ROUTES},
            "actions_by_kind": {kind.value: kinds[kind] / count for kind in Action},
        }


ROUTES = ("accepted as-is", "proposal corrected", "click to segment", "box to mask", "polygon")
PROPOSAL_ROUTES = ROUTES[:2]


@dataclass
class Goal:
    """One instance to label: its ground truth, the mask IoU to reach, and each keypoint's
    tolerance (``K``, pixels, ``keypoint_tolerance``)."""

    truth: Truth
    iou: float
    tolerances: np.ndarray


def finish(route: str, base: list[Action], start: Candidate, goal: Goal, accept_unedited: bool = False) -> Attempt:
    """An attempt that starts from the instance ``start`` after the actions ``base``: strokes to the
    IoU within the cap (an instance left unedited needs accepting when ``accept_unedited``), then the
    keypoint corrections. Route "proposal" is told apart as accepted as-is or corrected."""
    budget = MAX_ACTIONS - len(base) - accept_unedited
    strokes, reached = correct_with_strokes(start.mask, goal.truth.mask, goal.iou, budget)
    actions = base + [Action.STROKE] * strokes  # within the cap by the budget
    done = reached >= goal.iou
    if done:
        actions += [Action.VERDICT] * (accept_unedited and not strokes)
        actions += keypoint_actions(goal.truth.keypoints, start.keypoints, goal.tolerances)
    if route == "proposal":
        route = "accepted as-is" if done and len(actions) == 1 else "proposal corrected"
    return Attempt(route, actions, reached, done)


def polygon_attempt(arm: Arm, goal: Goal, polygons: tuple[list[np.ndarray], float]) -> Attempt:
    """Drawing the instance as ``polygons`` (``fewest_vertex_polygons``), then placing its keypoints."""
    outlines, reached = polygons
    actions = arm.pick(goal.truth.category_id) + polygon_actions(outlines)
    if not outlines or len(actions) > MAX_ACTIONS:
        return Attempt("polygon", actions[:MAX_ACTIONS], reached, False)
    return Attempt("polygon", actions + keypoint_actions(goal.truth.keypoints, None, goal.tolerances), reached, True)


def model_attempts(arm: Arm, work: ImageWork, goal: Goal, proposal: Candidate | None) -> list[Attempt]:
    """The routes that start from the model: the matching proposal, click to segment, box to mask."""
    truth, attempts = goal.truth, []
    if proposal is not None:
        base = [Action.VERDICT] + [Action.CLICK] * (proposal.category_id != truth.category_id)
        attempts.append(finish("proposal", base, proposal, goal))
    click = next_click(np.zeros_like(truth.mask), truth.mask)
    if click is not None and work.candidates:
        stack = SimpleNamespace(
            masks=np.stack([c.mask for c in work.candidates]),
            scores=np.array([1.0 if c.score is None else c.score for c in work.candidates]),
        )
        picked = detection_at(stack, click.point)
        # a click on a shown proposal selects it: that is the proposal route
        if picked is not None and not work.candidates[picked].shown:
            found = work.candidates[picked]
            base = [Action.CLICK] + [Action.CLICK] * (found.category_id != truth.category_id)
            attempts.append(finish("click to segment", base, found, goal, accept_unedited=True))
    if work.box_to_mask is not None:
        rows, columns = np.flatnonzero(truth.mask.any(axis=1)), np.flatnonzero(truth.mask.any(axis=0))
        found = work.box_to_mask((columns[0], rows[0], columns[-1] + 1.0, rows[-1] + 1.0), truth.category_id)
        if found is not None:
            attempts.append(finish("box to mask", arm.pick(truth.category_id) + [Action.BOX], found, goal))
    return attempts


def cheapest(attempts: list[Attempt]) -> Attempt:
    """The attempt that reaches the IoU in the fewest seconds (then actions); if none does, the one
    that came closest, charged the cap: its actions, and clicks for the rest up to ``MAX_ACTIONS``."""
    reached = [a for a in attempts if a.reached]
    if reached:
        return min(reached, key=lambda a: (seconds(a.actions), len(a.actions)))
    closest = max(attempts, key=lambda a: a.iou)
    padding = [Action.CLICK] * (MAX_ACTIONS - len(closest.actions))
    return Attempt(closest.route, closest.actions[:MAX_ACTIONS] + padding, closest.iou, False)


def match(truths: list[Truth], shown: list[Candidate]) -> dict[int, int]:
    """Ground-truth index -> index of the shown proposal a person would start from: greedily by mask
    IoU, one each, any overlap (whether correcting it beats the other routes is ``cheapest``'s call;
    the category does not matter: a mask of the wrong category still helps)."""
    pairs = [(mask_iou(t.mask, c.mask), ti, ci) for ti, t in enumerate(truths) for ci, c in enumerate(shown)]
    matched: dict[int, int] = {}
    for overlap, ti, ci in sorted(pairs, reverse=True):
        if overlap > 0 and ti not in matched and ci not in matched.values():
            matched[ti] = ci
    return matched


def label_image(work: ImageWork, iou: float, sigmas: np.ndarray, ours: Arm, manual: Arm) -> None:
    """The simulated person labels every instance of one image both ways, in the file's order."""
    shown = [c for c in work.candidates if c.shown]
    matched = match(work.truths, shown)
    ours.rejects += len(shown) - len(matched)
    for index, truth in enumerate(work.truths):
        goal = Goal(truth, iou, np.array([keypoint_tolerance(truth.mask.sum(), s, iou) for s in sigmas]))
        polygons = fewest_vertex_polygons(truth.mask, iou)
        proposal = shown[matched[index]] if index in matched else None
        attempts = model_attempts(ours, work, goal, proposal) + [polygon_attempt(ours, goal, polygons)]
        if proposal is not None:  # any other route leaves the matching proposal to reject
            for attempt in attempts:
                if attempt.reached and attempt.route not in PROPOSAL_ROUTES:
                    attempt.actions.append(Action.VERDICT)
        taken = cheapest(attempts)
        ours.attempts.append(taken)
        if taken.route in ("box to mask", "polygon"):
            ours.current_category = truth.category_id
        manual.attempts.append(cheapest([polygon_attempt(manual, goal, polygons)]))
        manual.current_category = truth.category_id


# --- input: the ground truth, a results file, the model ---------------------------------------------


def _mask(path: Path, where: str, segmentation: Any, height: int, width: int) -> np.ndarray:
    """The ``H x W`` bool mask of a COCO segmentation (polygons, compressed or uncompressed RLE),
    through the store's mask code; InputError naming ``path`` and ``where`` when it is none."""
    try:
        if isinstance(segmentation, list):
            for polygon in segmentation:
                if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
                    raise ValueError("a polygon needs at least 3 points as [x1, y1, x2, y2, ...]")
                if any(finite_number(v) is None for v in polygon):
                    raise ValueError("polygon coordinates must be finite numbers")
            rle = masks.from_polygons(segmentation, height, width)
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
            rle = masks.from_uncompressed(segmentation)
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str):
            rle = masks.validated(segmentation)
        else:
            raise ValueError("'segmentation' must be polygons or an RLE")
    except (TypeError, ValueError, KeyError, OverflowError) as error:
        raise InputError(path, f"{where}: {error}") from None
    if list(rle["size"]) != [height, width]:
        raise InputError(path, f"{where}: mask size {list(rle['size'])} differs from the image's {[height, width]}")
    return masks.decode(rle)


def keypoint_categories(data: CocoData) -> set[int]:
    """Ids of the categories that have the data set's keypoints."""
    names = list(data.labels.keypoint_names)
    return {int(c["id"]) for c in data.raw["categories"] if names and list(c.get("keypoints") or ()) == names}


def read_truths(data: CocoData) -> tuple[dict[int, list[Truth]], int]:
    """The ground truth by image id, and how many instances were left out for having no mask."""
    with_keypoints = keypoint_categories(data)
    truths: dict[int, list[Truth]] = {}
    left_out = 0
    for record in data.images:
        truths[record.image_id] = []
        for index, (segmentation, label, points) in enumerate(
            zip(record.segmentations, record.labels, record.keypoints)
        ):
            if segmentation is None:
                left_out += 1
                continue
            where = f"image {record.image_id}, annotation {index + 1}"
            mask = _mask(data.path, where, segmentation, record.height, record.width)
            category_id = data.labels.category_ids[int(label) - 1]
            keypoints = np.asarray(points, np.float64) if category_id in with_keypoints else None
            truths[record.image_id].append(Truth(mask, category_id, keypoints))
    return truths, left_out


def read_candidates(path: Path, data: CocoData) -> dict[int, list[Candidate]]:
    """Proposals from a COCO results file (a list of annotations with ``image_id``, ``category_id``,
    ``segmentation``, ``score``, optional ``keypoints``) or a COCO file's ``annotations``. A
    keypoint's third number is its visibility when it is 0, 1 or 2; any other positive number (the
    score results files carry) proposes it visible."""
    value = read_json(path)
    entries = value.get("annotations") if isinstance(value, dict) else value
    if not isinstance(entries, list):
        raise InputError(path, "not a results file: expected a list of annotations (or a COCO file)")
    images = {record.image_id: record for record in data.images}
    with_keypoints, count = keypoint_categories(data), data.labels.num_keypoints
    found: dict[int, list[Candidate]] = {image_id: [] for image_id in images}
    for index, entry in enumerate(entries):
        where = f"[{index}]"
        if not isinstance(entry, dict) or "segmentation" not in entry:
            raise InputError(path, f"{where}: needs 'image_id', 'category_id' and 'segmentation'")
        record = images.get(entry.get("image_id"))  # type: ignore[arg-type]
        if record is None:
            raise InputError(
                path, f"{where}: image_id {entry.get('image_id')!r} is not among the ground truth's images"
            )
        if entry.get("category_id") not in data.labels.category_ids:
            raise InputError(path, f"{where}: category_id {entry.get('category_id')!r} is not a ground-truth category")
        score = None if entry.get("score") is None else finite_number(entry["score"])
        if entry.get("score") is not None and score is None:
            raise InputError(path, f"{where}: 'score' must be a finite number")
        mask = _mask(path, where, entry["segmentation"], record.height, record.width)
        keypoints = None
        values = entry.get("keypoints")
        if values and entry["category_id"] in with_keypoints:
            if (
                not isinstance(values, list)
                or len(values) != 3 * count
                or any(finite_number(v) is None for v in values)
            ):
                raise InputError(path, f"{where}: 'keypoints' must be 3 x {count} finite numbers")
            keypoints = np.asarray(values, np.float64).reshape(count, 3)
            keypoints[:, 2] = np.where(np.isin(keypoints[:, 2], (0, 1, 2)), keypoints[:, 2], 2 * (keypoints[:, 2] > 0))
        found[record.image_id].append(Candidate(mask, int(entry["category_id"]), score, keypoints))
    return found


class ModelProposals:
    """Proposals and box to mask from a ``Predictor`` made as the app makes it, through the app's
    own conversions (``annotator.proposals.to_proposals``, ``annotator.prompts.proposals_for``)."""

    def __init__(self, weights: str, device: str, data: CocoData) -> None:
        from model.cli import load_predictor  # one-line errors for weights that cannot be loaded
        from model.images import read_image

        self.predictor = load_predictor(weights, device)
        self.read_image = read_image
        self.data = data
        self.with_keypoints = keypoint_categories(data)
        names = data.labels.class_names[1:]
        self.category_ids = dict(zip(names, data.labels.category_ids))

    def candidate(self, proposal: Proposal) -> Candidate:
        category_id = self.category_ids.get(proposal.label_name)
        points = proposal.keypoints
        # the store keeps a proposal's keypoints where its category has that many (annotator.proposals)
        kept = (
            category_id in self.with_keypoints and points is not None and len(points) == self.data.labels.num_keypoints
        )
        return Candidate(masks.decode(proposal.rle), category_id, proposal.score, points if kept else None)

    def work(self, record: Any, truths: list[Truth]) -> ImageWork:
        pixels = self.read_image(self.data.image_root / record.file_name)
        candidates = [self.candidate(p) for p in to_proposals(self.predictor.predict(pixels))]
        names = {category_id: name for name, category_id in self.category_ids.items()}

        def box_to_mask(box: tuple[float, float, float, float], category_id: int) -> Candidate | None:
            if names[category_id] not in self.predictor.class_names:
                return None  # the app's box tool asks for the current category, which the model must know
            found = proposals_for(PromptKind.BOX, self.predictor.predict_in_box(pixels, box, names[category_id]))
            return self.candidate(found[0]) if found else None

        return ImageWork(truths, candidates, box_to_mask)


# --- the run and its report -----------------------------------------------------------------------------


def measure(data: CocoData, works: Callable[[Any, list[Truth]], ImageWork], iou: float) -> dict[str, Any]:
    """Both ways of working over every image of ``data``; ``works(record, truths)`` gives what the
    person meets on an image. Returns the summary the report prints (see ``main``)."""
    truths, left_out = read_truths(data)
    sigmas = oks_sigmas(data.labels.keypoint_names)
    ours, manual = Arm(), Arm()
    for record in data.images:
        label_image(works(record, truths[record.image_id]), iou, sigmas, ours, manual)
    summary, by_hand = ours.summary(), manual.summary()
    result = {
        **summary,
        "accepted_as_is": summary["routes"]["accepted as-is"],
        "manual_path": summary["routes"]["polygon"],
    }
    kept = ("actions_per_instance", "actions_median", "seconds_per_instance", "unreached", "actions_by_kind")
    result.update({f"manual_{key}": by_hand[key] for key in kept})
    for what in ("actions", "seconds"):
        ours_per_instance = summary[f"{what}_per_instance"]
        result[f"{what}_ratio"] = by_hand[f"{what}_per_instance"] / ours_per_instance if ours_per_instance else None
    result.update(instances=len(ours.attempts), images=len(data.images), left_out_without_mask=left_out, iou=iou)
    return result


def report(result: dict[str, Any], what: str) -> str:
    """The table ``main`` prints: ours and by hand side by side, and how ours got there."""
    ratio = "  ".join(f"{v:.2f}x" if v else "-" for v in (result["actions_ratio"], result["seconds_ratio"]))
    routes = ", ".join(f"{name} {share:.0%}" for name, share in result["routes"].items())
    lines = [
        f"{result['instances']} instances in {result['images']} images; mask IoU >= {result['iou']:g}, right category"
        + (f"; {result['left_out_without_mask']} without a mask left out" if result["left_out_without_mask"] else ""),
        f"{'':<26}{'actions/instance':>18}{'median':>8}{'seconds/instance':>18}{'unreached':>11}",
        f"{'ours (' + what + ')':<26}{result['actions_per_instance']:>18.2f}{result['actions_median']:>8g}"
        f"{result['seconds_per_instance']:>18.1f}{result['unreached']:>11}",
        f"{'by hand (polygons)':<26}{result['manual_actions_per_instance']:>18.2f}{result['manual_actions_median']:>8g}"
        f"{result['manual_seconds_per_instance']:>18.1f}{result['manual_unreached']:>11}",
        f"by hand / ours: {ratio} (actions, seconds)",
        f"ours by route: {routes}; {result['rejects']} proposals rejected",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ground_truth", type=Path, metavar="GT.json", help="COCO instances (and keypoints) file")
    parser.add_argument("--images", type=Path, required=True, metavar="DIR", help="the folder of its images")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="proposals from this model, as the app makes them")
    source.add_argument("--proposals", type=Path, metavar="RESULTS.json", help="proposals from a COCO results file")
    source.add_argument("--manual", action="store_true", help="no proposals and no model")
    parser.add_argument("--iou", type=float, default=0.85, help="mask IoU an instance must reach (default 0.85)")
    parser.add_argument("--device", default="auto", help="for --weights: auto (as the app), cpu, cuda, ...")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON object, last")
    from bench.effort_rounds import add_round_arguments  # the loop measured: rounds of labelling and fine-tuning

    add_round_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 < args.iou <= 1:
        print(f"error: --iou must be in (0, 1], got {args.iou}", file=sys.stderr)
        return 2
    try:
        data = load_coco(args.ground_truth, args.images)
        if args.rounds is not None:
            return args.run_rounds(args, data)
        if args.weights:
            works, what = ModelProposals(args.weights, args.device, data).work, Path(args.weights).name
        elif args.proposals:
            candidates = read_candidates(args.proposals, data)
            works, what = (lambda record, truths: ImageWork(truths, candidates[record.image_id])), args.proposals.name
        else:
            works, what = (lambda record, truths: ImageWork(truths, [])), "no proposals"
        result = measure(data, works, args.iou)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report(result, what))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
