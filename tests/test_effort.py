"""bench/effort.py, the simulated annotator: its sanity checks (the ground truth as proposals costs one
action an instance; no proposals cost what drawing by hand costs; eroded proposals need strokes, the
more eroded the more) and its pieces (where a correction goes, the fewest-vertex polygon, keypoint
corrections). The data are small synthetic shapes; no model runs here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from annotator import masks
from annotator.learning import RoundSettings
from annotator.strokes import correction_stroke, next_click, rasterise_stroke
from bench import effort
from bench.effort_rounds import measure_rounds, next_images, report_rounds
from model.data import load_coco
from model.synthetic import generate
from resources import bundled_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """Four 128 x 128 images of two or three large shapes each (annotations.json beside images/)."""
    return generate(
        tmp_path_factory.mktemp("effort"),
        4,
        seed=31,
        size=(128, 128),
        min_shapes=2,
        max_shapes=3,
        shape_size=(0.3, 0.45),
        min_visible_area=300,
    )


def measured(gt: Path, *source: str, capsys) -> dict:
    """The JSON object ``bench/effort.py GT --images DIR SOURCE --json`` prints last."""
    assert effort.main([str(gt), "--images", str(gt.parent / "images"), *source, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def eroded_proposals(gt: Path, pixels: int, out: Path) -> Path:
    """A results file of the ground truth with every mask eroded by a disc of ``pixels`` radius
    (categories and keypoints kept, score 1)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    results = []
    for entry in json.loads(gt.read_text())["annotations"]:
        mask = cv2.erode(masks.decode(entry["segmentation"]).astype(np.uint8), kernel)
        results.append(
            {
                "image_id": entry["image_id"],
                "category_id": entry["category_id"],
                "score": 1.0,
                "segmentation": masks.encode(mask),
                "keypoints": entry["keypoints"],
            }
        )
    out.write_text(json.dumps(results))
    return out


def test_the_ground_truth_as_proposals_costs_one_action_an_instance(shapes, capsys):
    result = measured(shapes, "--proposals", str(shapes), capsys=capsys)
    assert result["instances"] == len(json.loads(shapes.read_text())["annotations"]) > 0
    assert result["actions_per_instance"] == 1.0
    assert result["accepted_as_is"] == 1.0
    assert result["unreached"] == 0
    assert result["seconds_per_instance"] == pytest.approx(effort.SECONDS[effort.Action.VERDICT])


def test_no_proposals_cost_what_drawing_by_hand_costs(shapes, tmp_path, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    without = measured(shapes, "--proposals", str(empty), capsys=capsys)
    manual = measured(shapes, "--manual", capsys=capsys)
    for key in ("actions_per_instance", "actions_median", "seconds_per_instance", "unreached"):
        assert without[key] == manual[key] == manual[f"manual_{key}"]
    assert without["manual_path"] == 1.0
    assert manual["actions_per_instance"] > 5  # polygons and keypoint clicks are real work


def test_eroded_proposals_need_strokes_and_more_the_more_they_are_eroded(shapes, tmp_path, capsys):
    strokes, actions = [], []
    for pixels in (0, 1, 2, 3):
        result = measured(
            shapes, "--proposals", str(eroded_proposals(shapes, pixels, tmp_path / f"{pixels}.json")), capsys=capsys
        )
        strokes.append(result["actions_by_kind"]["stroke"])
        actions.append(result["actions_per_instance"])
        assert result["unreached"] == 0
    assert strokes[0] == 0 < strokes[1] < strokes[3]
    assert strokes == sorted(strokes) and actions == sorted(actions)
    assert actions[3] < result["manual_actions_per_instance"]  # correcting beats redrawing


def test_the_command_line_prints_the_figures_as_json_last(shapes):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "effort.py"),
            str(shapes),
            "--images",
            str(shapes.parent / "images"),
            "--manual",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in (
        "actions_per_instance",
        "seconds_per_instance",
        "accepted_as_is",
        "manual_actions_per_instance",
        "manual_seconds_per_instance",
        "instances",
        "unreached",
    ):
        assert key in result
    assert "by hand" in done.stdout


def test_a_proposals_file_for_other_images_is_one_line_naming_it(shapes, tmp_path, capsys):
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([{"image_id": 999, "category_id": 1, "segmentation": [[0, 0, 5, 0, 5, 5]]}]))
    assert effort.main([str(shapes), "--images", str(shapes.parent / "images"), "--proposals", str(wrong)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(wrong) in error and "image_id 999" in error


# --- the pieces ----------------------------------------------------------------------------------------


def squares(*corners_and_sides: tuple[int, int, int], shape=(64, 64)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for row, column, side in corners_and_sides:
        mask[row : row + side, column : column + side] = True
    return mask


def test_the_next_click_goes_to_the_deepest_error_region():
    target = squares((4, 4, 6), (30, 30, 20))
    click = next_click(np.zeros_like(target), target)
    assert click.positive and 30 <= click.pixel[0] < 50 and 30 <= click.pixel[1] < 50
    assert click.point == (click.pixel[1] + 0.5, click.pixel[0] + 0.5)
    # background the mask covers, deeper than what it misses: the eraser's turn
    mask = target | squares((2, 40, 16))
    mask[35, 35] = False
    assert not next_click(mask, target).positive
    assert next_click(target, target) is None


def test_a_stroke_paints_the_missed_region_without_painting_background():
    target = squares((10, 10, 30))
    mask = target & ~squares((10, 10, 30 // 2))  # the top-left quarter missed
    stroke = correction_stroke(mask, target)
    painted = rasterise_stroke(target.shape, stroke.points, stroke.radius)
    assert not stroke.erase and stroke.radius >= 5  # sized to the region, not the smallest brush
    assert not (painted & ~target).any()
    assert (mask | painted).sum() > mask.sum() + 0.8 * (target & ~mask).sum()


def test_a_thin_missed_rim_is_one_stroke_along_it():
    target = cv2.circle(np.zeros((80, 80), np.uint8), (40, 40), 25, 1, -1).astype(bool)
    mask = cv2.erode(target.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))).astype(bool)
    assert effort.mask_iou(mask, target) < 0.85
    assert effort.correct_with_strokes(mask, target, 0.95, 20)[0] == 1


def test_the_eraser_takes_extra_background_off():
    target = squares((20, 20, 20))
    mask = target | squares((20, 40, 12))  # a slab of background beside the object
    stroke = correction_stroke(mask, target)
    assert stroke.erase
    erased = rasterise_stroke(target.shape, stroke.points, stroke.radius)
    assert (erased & mask & ~target).sum() > 0.8 * (mask & ~target).sum()
    assert (erased & target).sum() <= 2  # at most a pixel's spill where the drag turns a corner


def test_a_polygon_reaches_the_iou_with_the_fewest_vertices_it_finds():
    rectangle = squares((10, 12, 30))
    rectangle[10:40, 12:52] = True
    polygons, reached = effort.fewest_vertex_polygons(rectangle, 0.95)
    assert [len(p) for p in polygons] == [4] and reached >= 0.95
    ellipse = cv2.ellipse(np.zeros((90, 90), np.uint8), (45, 45), (40, 22), 30, 0, 360, 1, -1).astype(bool)
    counts = []
    for iou in (0.8, 0.9, 0.97):
        polygons, reached = effort.fewest_vertex_polygons(ellipse, iou)
        flat = [p.reshape(-1).tolist() for p in polygons]
        assert effort.mask_iou(masks.decode(masks.from_polygons(flat, 90, 90)), ellipse) == reached >= iou
        counts.append(len(polygons[0]))
    assert counts == sorted(counts) and counts[0] < counts[-1]
    assert counts[0] <= 6  # an inscribed hexagon covers 83 % of an ellipse


def test_a_polygon_per_part_and_none_for_what_polygons_cannot_draw():
    two = squares((5, 5, 20), (40, 40, 20))
    assert [len(p) for p in effort.fewest_vertex_polygons(two, 0.9)[0]] == [4, 4]
    ring = squares((5, 5, 50)) & ~squares((15, 15, 30))  # a hole of 36 % the polygon would fill
    assert effort.fewest_vertex_polygons(ring, 0.85)[0] == []
    assert effort.polygon_actions([np.zeros((4, 2)), np.zeros((4, 2))]).count(effort.Action.CLICK) == 3


def test_keypoints_cost_a_drag_when_off_and_clicks_for_visibility():
    click, drag = effort.Action.CLICK, effort.Action.DRAG
    truth = np.array([[10.0, 10.0, 2], [20.0, 20.0, 1], [0.0, 0.0, 0], [30.0, 30.0, 2]])
    tolerances = np.full(4, 3.0)
    assert effort.keypoint_actions(truth, truth, tolerances) == []
    proposed = np.array([[11.0, 11.0, 2], [20.0, 26.0, 2], [5.0, 5.0, 2], [0.0, 0.0, 0]])
    # 2: within tolerance; 1: occluded (one right-click) and off (a drag); 0: cleared (2 -> 1 -> 0);
    # 3: not proposed, placed by a click
    assert sorted(effort.keypoint_actions(truth, proposed, tolerances)) == sorted([click, drag, click, click, click])
    assert effort.keypoint_actions(truth, None, tolerances) == [click] * 4  # 3 placed, 1 made occluded
    assert effort.keypoint_actions(None, proposed, tolerances) == []
    assert effort.keypoint_tolerance(400.0, 0.05, 0.85) == pytest.approx(2 * 0.05 * 20 * 0.570, rel=1e-3)


# --- the loop: rounds of labelling and fine-tuning -------------------------------------------------------


def test_rounds_label_each_image_once_with_the_model_the_previous_round_left(shapes):
    data = load_coco(shapes, shapes.parent / "images")
    # two steps a round and half the done images held out: a round in seconds, and a comparison
    fast = RoundSettings(iterations=2, device="cpu", threads=1, held_out_fraction=0.5)
    result = measure_rounds(data, str(bundled_model()), "cpu", 0.85, 3, 2, "list", fast)
    rounds = result["rounds"]
    assert [entry["round"] for entry in rounds] == [0, 1] and [entry["images"] for entry in rounds] == [2, 2]
    assert (
        sum(entry["instances"] for entry in rounds)
        == result["instances"]
        == len(json.loads(shapes.read_text())["annotations"])
    )
    assert rounds[0]["train_seconds"] == 0 and rounds[0]["weights"] == "model.safetensors"
    assert rounds[1]["train_seconds"] > 0 and rounds[1]["model"]  # the round says what it decided
    kept_new = rounds[1]["model"].startswith(("switched", "too few held-out"))
    assert rounds[1]["weights"] == ("model_final.safetensors" if kept_new else "model.safetensors")
    for entry in rounds:
        assert 1 <= entry["actions_per_instance"] < entry["manual_actions_per_instance"]
    overall = sum(entry["actions_per_instance"] * entry["instances"] for entry in rounds) / result["instances"]
    assert result["actions_per_instance"] == pytest.approx(overall)  # rejects included
    # by hand costs the same whatever model is in use: over all rounds as in one measure
    manual = effort.measure(data, lambda record, truths: effort.ImageWork(truths, []), 0.85)
    assert result["manual_actions_per_instance"] == pytest.approx(manual["manual_actions_per_instance"])


def test_a_fixed_set_is_labelled_by_every_rounds_model_and_by_no_round(shapes):
    data = load_coco(shapes, shapes.parent / "images")
    fast = RoundSettings(iterations=2, device="cpu", threads=1, held_out_fraction=0.5)
    result = measure_rounds(data, str(bundled_model()), "cpu", 0.85, 3, 2, "list", fast, fixed_set=1)
    rounds = result["rounds"]
    annotations = json.loads(shapes.read_text())["annotations"]
    last = data.images[-1].image_id
    assert [entry["images"] for entry in rounds] == [2, 1]  # three images to label, the last set aside
    assert result["instances"] == sum(a["image_id"] != last for a in annotations)
    fixed = [entry["fixed_set"] for entry in rounds]
    assert {(f["images"], f["instances"]) for f in fixed} == {(1, sum(a["image_id"] == last for a in annotations))}
    assert len({f["manual_actions_per_instance"] for f in fixed}) == 1  # the same image by hand each round
    assert all(1 <= f["actions_per_instance"] < f["manual_actions_per_instance"] for f in fixed)
    assert result["fixed_set"] == 1 and "fixed set" in report_rounds(result, "demo")


def test_a_fixed_set_that_leaves_nothing_to_label_is_one_line(shapes, capsys):
    args = [str(shapes), "--images", str(shapes.parent / "images"), "--weights", str(bundled_model())]
    assert effort.main([*args, "--rounds", "2", "--fixed-set", "4"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_the_command_line_with_rounds_prints_a_list_of_rounds_in_the_json_last(shapes):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "effort.py"),
            str(shapes),
            "--images",
            str(shapes.parent / "images"),
            "--weights",
            str(ROOT / "resources" / "demo" / "model.safetensors"),
            "--device",
            "cpu",
            "--rounds",
            "1",
            "--round-size",
            "3",
            "--order",
            "uncertainty",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    (only,) = result["rounds"]
    for key in ("actions_per_instance", "seconds_per_instance", "images", "train_seconds"):
        assert key in only
    assert only["images"] == 3 and only["train_seconds"] == 0 and result["order"] == "uncertainty"
    assert result["manual_actions_per_instance"] > only["actions_per_instance"]


def test_rounds_need_a_model_and_say_so_in_one_line(shapes, capsys):
    assert effort.main([str(shapes), "--images", str(shapes.parent / "images"), "--manual", "--rounds", "2"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_the_uncertainty_order_takes_the_images_whose_proposals_are_least_sure_first():
    def work(*scores: float) -> effort.ImageWork:
        return effort.ImageWork([], [effort.Candidate(np.zeros((4, 4), bool), 1, s, None) for s in scores])

    records = [SimpleNamespace(image_id=i) for i in range(4)]
    works = {0: work(0.99, 0.98), 1: work(0.5, 0.55), 2: work(0.97, 0.6), 3: work(0.02, 0.99)}
    assert [r.image_id for r in next_images(works, records, 2, "uncertainty")] == [1, 2]
    assert [r.image_id for r in next_images(works, records, 2, "list")] == [0, 1]
