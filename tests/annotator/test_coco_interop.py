"""COCO files as labelme2coco, Datumaro, mmpose and Roboflow write them import; what the project
keeps otherwise is normalised with a warning (docs/decisions/0006, 0010), and exports of them stay
exact where the file was."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

import main
from annotator import masks
from annotator.coco import export_coco, import_coco
from annotator.store import Project, ReviewState, Source
from model.errors import InputError
from tests.annotator.coco_writers import (
    COCO_KEYPOINTS,
    COCO_SKELETON,
    SIZE,
    WRITERS,
    average_precision,
    datumaro,
    labelme2coco,
    mmpose,
    roboflow,
)
from tests.files import write_images, write_json

REPO = Path(__file__).resolve().parents[2]


def _import(tmp_path: Path, data: dict, **options: object) -> tuple[Project, Path, list[str]]:
    source = write_json(tmp_path / "images" / "source.json", data)
    project = Project.create(tmp_path / "p.annot", tmp_path / "images")
    report = import_coco(project, source, **options)
    return project, source, report.warnings


def _export(project: Project, path: Path, **options: object) -> dict:
    export_coco(project, path, **options)
    return json.loads(path.read_text())


@pytest.mark.parametrize("writer", WRITERS)
def test_files_of_other_tools_import_and_export_again(writer: str, tmp_path: Path) -> None:
    data = WRITERS[writer](tmp_path / "images")
    project, source, _ = _import(tmp_path, data)
    with project:
        assert project.instance_count() == len(data["annotations"])
        exported = _export(project, tmp_path / "out.json", rle=True)
    assert len(exported["annotations"]) == len(data["annotations"])
    assert all(annotation["id"] >= 1 for key in ("images", "annotations", "categories") for annotation in exported[key])


def test_labelme2coco_ids_from_zero_keep_every_id_but_zero(tmp_path: Path) -> None:
    project, source, warnings = _import(tmp_path, labelme2coco(tmp_path / "images"))
    with project:
        assert {c.name: c.id for c in project.categories()} == {"dog": 1, "cat": 2}  # no _background_
        assert {i.file_name: i.id for i in project.images()} == {"1.png": 1, "0.png": 2}
        exported = _export(project, tmp_path / "out.json")
    assert sorted(a["id"] for a in exported["annotations"]) == [1, 2]  # 0 came in as 2
    assert any("'_background_' is labelme2coco's background class" in w for w in warnings)
    assert any("1 image id(s) differ in the project: 0 -> 2" in w for w in warnings)
    assert any("1 annotation id(s) differ in the project: 0 -> 2" in w for w in warnings)


def test_null_supercategory_reads_as_empty(tmp_path: Path) -> None:
    project, _, _ = _import(tmp_path, labelme2coco(tmp_path / "images"))
    with project:
        assert [c.supercategory for c in project.categories()] == ["", ""]


def test_roboflow_dataset_category_is_left_out_and_box_only_annotations_stay_boxes(tmp_path: Path) -> None:
    project, _, warnings = _import(tmp_path, roboflow(tmp_path / "images"))
    with project:
        assert {c.name: c.id for c in project.categories()} == {"cat": 1, "dog": 2}
        box, outline = sorted(project.instances(1), key=lambda i: i.category_id)
        assert box.rle is None and box.bbox == (3.0, 3.0, 12.0, 10.0) and box.area == 120
        assert outline.rle is not None
    assert any("'pets' has no annotations and is the supercategory of others" in w for w in warnings)


def test_keypoints_of_a_category_without_keypoint_names_get_numbered_names(tmp_path: Path) -> None:
    data = datumaro(tmp_path / "images")
    project, _, warnings = _import(tmp_path, data)
    with project:
        (hand,) = project.categories()
        assert hand.keypoints == ("1", "2", "3")
        (instance,) = project.instances(1)
        assert list(instance.keypoints) == data["annotations"][0]["keypoints"]
    assert any("names no keypoints, but its annotations hold 3; they are named 1..3" in w for w in warnings)


def test_a_category_without_names_takes_the_project_s_names(tmp_path: Path) -> None:
    data = datumaro(tmp_path / "images")
    with Project.create(tmp_path / "p.annot", tmp_path / "images") as project:
        project.add_category("hand", keypoints=["thumb", "index", "wrist"])
        import_coco(project, write_json(tmp_path / "images" / "d.json", data))
        assert project.categories()[0].keypoints == ("thumb", "index", "wrist")


def test_whole_person_boxes_and_areas_are_kept_and_evaluate_to_ap_one(tmp_path: Path) -> None:
    data = mmpose(tmp_path / "images")
    project, source, warnings = _import(tmp_path, data)
    with project:
        for annotation in data["annotations"]:
            instance = project.instance(annotation["id"])
            assert list(instance.bbox) == annotation["bbox"]  # larger than the visible mask
            assert masks.bbox(instance.rle) != tuple(annotation["bbox"])
            assert instance.area == annotation["area"]
            assert list(instance.keypoints) == annotation["keypoints"]  # negative x included
        exported = _export(project, tmp_path / "out.json")
    by_id = {a["id"]: a for a in exported["annotations"]}
    assert [by_id[a["id"]]["bbox"] for a in data["annotations"]] == [a["bbox"] for a in data["annotations"]]
    assert exported["categories"][0]["skeleton"] == COCO_SKELETON
    assert [i["id"] for i in exported["images"]] == [785, 40083]
    results = [dict(a, score=1.0) for a in exported["annotations"]]
    for iou_type in ("bbox", "keypoints"):
        assert average_precision(source, results, iou_type, [1], len(COCO_KEYPOINTS)) == pytest.approx(1.0)
    assert not any("bbox" in w for w in warnings)


def test_a_box_that_does_not_hold_the_mask_gives_way_to_the_mask_s_with_a_warning(tmp_path: Path) -> None:
    data = mmpose(tmp_path / "images")
    data["annotations"][0]["bbox"] = [20.0, 20.0, 5.0, 5.0]
    project, _, warnings = _import(tmp_path, data)
    with project:
        instance = project.instance(data["annotations"][0]["id"])
        assert instance.bbox == masks.bbox(instance.rle)
        assert instance.area == masks.area(instance.rle)
    assert any("its 'bbox' does not hold its mask; the mask's box and area are kept" in w for w in warnings)


def test_an_edited_mask_brings_its_own_box(tmp_path: Path) -> None:
    data = mmpose(tmp_path / "images")
    project, _, _ = _import(tmp_path, data)
    with project:
        instance = project.instance(data["annotations"][0]["id"])
        assert project.update_instance(instance.id, keypoints=instance.keypoints).bbox == instance.bbox
        edited = project.update_instance(instance.id, mask=instance.mask)
        assert edited.bbox == masks.bbox(instance.rle) and edited.area == masks.area(instance.rle)


def test_skeletons_from_zero_are_shifted_and_edges_without_keypoints_left_out(tmp_path: Path) -> None:
    data = mmpose(tmp_path / "images")
    data["categories"][0]["skeleton"] = [[edge[0] - 1, edge[1] - 1] for edge in COCO_SKELETON]
    project, _, warnings = _import(tmp_path, data)
    with project:
        assert [list(edge) for edge in project.categories()[0].skeleton] == COCO_SKELETON
    assert any("the skeleton counts keypoints from 0" in w for w in warnings)

    three = datumaro(tmp_path / "other")
    three["categories"][0].update(keypoints=["a", "b", "c"], skeleton=COCO_SKELETON + [[1], "x"])
    with Project.create(tmp_path / "q.annot", tmp_path / "other") as project:
        report = import_coco(project, write_json(tmp_path / "other" / "s.json", three))
        assert project.categories()[0].skeleton == ((2, 3), (1, 2), (1, 3))
    assert any("18 skeleton edges are not pairs of keypoint numbers 1..3; left out" in w for w in report.warnings)


def test_iscrowd_given_as_true_or_false_reads_as_one_or_zero(tmp_path: Path) -> None:
    data = roboflow(tmp_path / "images")
    data["annotations"][0]["iscrowd"] = False
    data["annotations"][1]["iscrowd"] = True
    data["annotations"][1]["segmentation"] = masks.from_uncompressed(
        {"size": [SIZE[1], SIZE[0]], "counts": [100, 50, SIZE[0] * SIZE[1] - 150]}
    )
    project, _, warnings = _import(tmp_path, data)
    with project:
        assert [i.iscrowd for i in sorted(project.instances(1), key=lambda i: i.category_id)] == [False, True]
    assert any("'iscrowd' is true or false; read as 1 or 0" in w for w in warnings)


def test_polygons_reaching_far_outside_the_image_are_clipped_and_the_image_keeps_its_pixels(tmp_path: Path) -> None:
    data = roboflow(tmp_path / "images")
    data["annotations"][1]["segmentation"] = [[5.0, 5.0, 25.0, 8.0, 15.0, 1e10]]  # pycocotools alone crashes
    started = time.monotonic()
    project, _, warnings = _import(tmp_path, data)
    assert time.monotonic() - started < 10
    with project:
        instance = project.instance(1)
        (clipped,) = instance.polygons
        assert max(clipped[1::2]) == SIZE[1] + SIZE[0]  # one image size below the image
        # the same triangle with its corner where pycocotools still copes: the same pixels
        near = mask_utils.frPyObjects([[5.0, 5.0, 25.0, 8.0, 15.0, 5000.0]], SIZE[1], SIZE[0])
        assert np.array_equal(instance.mask, mask_utils.decode(mask_utils.merge(near)).astype(bool))
    assert any("reaches more than one image size outside the image; clipped there" in w for w in warnings)


def test_rasterising_a_polygon_with_a_huge_coordinate_neither_crashes_nor_takes_long() -> None:
    # in a child process: without the bound, pycocotools dies with SIGSEGV
    code = (
        "from annotator import masks\n"
        "for corner in (4e7, 1e10, -1e10, 1e300):\n"
        "    rle = masks.from_polygons([[0, 0, 30, 5, corner, corner]], 30, 40)\n"
        "    assert rle['size'] == [30, 40]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_zero_length_runs_of_uncompressed_rle_are_merged_so_export_can_write_them(tmp_path: Path) -> None:
    data = roboflow(tmp_path / "images")
    pixels = SIZE[0] * SIZE[1]
    counts = [0, 0, 30, 0, 0, 12, 0, 0, pixels - 42]  # pixels 30..41 in the column-major order of RLE
    data["annotations"][1]["segmentation"] = {"size": [SIZE[1], SIZE[0]], "counts": counts}
    project, _, _ = _import(tmp_path, data)
    with project:
        exported = _export(project, tmp_path / "polygons.json")
        again = _export(project, tmp_path / "rle.json", rle=True)
    mask = np.zeros(pixels, bool)
    mask[30:42] = True
    (annotation,) = [a for a in again["annotations"] if a["category_id"] == 2]
    decoded = mask_utils.decode(
        {"size": annotation["segmentation"]["size"], "counts": annotation["segmentation"]["counts"].encode()}
    )
    assert np.array_equal(decoded.astype(bool), mask.reshape(SIZE[0], SIZE[1]).T)
    assert [a["bbox"] for a in exported["annotations"] if a["category_id"] == 2] == [[1.0, 0.0, 1.0, 12.0]]


def _long_number(value: int, characters: int) -> str:
    """``value`` in pycocotools' RLE code, padded to ``characters`` (sign-extended)."""
    out = []
    for k in range(characters):
        bits, value = value & 0x1F, value >> 5
        out.append(chr((bits | (0x20 if k < characters - 1 else 0)) + 48))
    return "".join(out)


def test_compressed_rle_that_pycocotools_reads_as_other_runs_is_refused(tmp_path: Path) -> None:
    runs = [6, 15, 7, 6]  # 34 pixels, written with numbers of 11, 4, 3 and 9 characters
    deltas = [runs[0], runs[1], runs[2], runs[3] - runs[1]]
    counts = "".join(_long_number(d, n) for d, n in zip(deltas, [11, 4, 3, 9]))
    with pytest.raises(ValueError, match="Invalid RLE"):  # pycocotools reads other runs than these
        mask_utils.decode({"size": [1, 34], "counts": counts.encode()})
    write_images(tmp_path / "images", [(34, 1)])
    data = {
        "images": [{"id": 1, "file_name": "0.png", "width": 34, "height": 1}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": {"size": [1, 34], "counts": counts}}
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    with Project.create(tmp_path / "p.annot", tmp_path / "images") as project:
        with pytest.raises(InputError, match="RLE counts hold a number too large for an image"):
            import_coco(project, write_json(tmp_path / "images" / "c.json", data))
        assert project.instance_count() == 0


def test_annotations_with_a_score_come_in_as_proposals(tmp_path: Path) -> None:
    data = roboflow(tmp_path / "images")
    data["annotations"][0]["score"] = 0.3
    data["annotations"][1]["score"] = 0.9
    project, source, warnings = _import(tmp_path, data)
    with project:
        instances = sorted(project.instances(1), key=lambda i: i.category_id)
        assert [(i.source, i.score, i.model_version) for i in instances] == [
            (Source.MODEL, 0.3, "source.json"),
            (Source.MODEL, 0.9, "source.json"),
        ]
        assert project.image(1).state == ReviewState.PROPOSED
        assert _export(project, tmp_path / "labels.json")["annotations"] == []
        asked = _export(project, tmp_path / "proposals.json", proposals_from=0.5)["annotations"]
    assert [(a["id"], a["score"]) for a in asked] == [(1, 0.9)]
    assert any("has a score: a proposal from 'source.json'" in w for w in warnings)


def test_importing_the_same_file_twice_skips_what_the_project_holds(tmp_path: Path) -> None:
    data = mmpose(tmp_path / "images")
    project, source, _ = _import(tmp_path, data)
    with project:
        before = project.instance_count()
        report = import_coco(project, source)
        assert (report.instances, report.duplicates, project.instance_count()) == (0, 2, before)
        assert "skipped 2 already in the project" in report.summary()
        assert any(
            "the image holds this instance already (same category and mask); skipped" in w for w in report.warnings
        )
        kept = import_coco(project, source, duplicates="keep")
        assert (kept.instances, kept.duplicates, project.instance_count()) == (2, 0, 2 * before)


def test_an_export_imported_again_adds_nothing(tmp_path: Path) -> None:
    project, _, _ = _import(tmp_path, roboflow(tmp_path / "images"))
    with project:
        export_coco(project, tmp_path / "images" / "out.json")
        report = import_coco(project, tmp_path / "images" / "out.json")
        assert (report.instances, report.duplicates) == (0, 2)


def test_image_ids_survive_new_then_import(tmp_path: Path) -> None:
    data = mmpose(tmp_path / "images")
    assert main.main(["new", str(tmp_path / "p"), "--images", str(tmp_path / "images")]) == 0
    source = write_json(tmp_path / "images" / "source.json", data)
    assert main.main(["import", str(tmp_path / "p"), str(source)]) == 0
    assert main.main(["export", str(tmp_path / "p"), str(tmp_path / "out.json"), "--rle"]) == 0
    exported = json.loads((tmp_path / "out.json").read_text())
    assert [(i["id"], i["file_name"]) for i in exported["images"]] == [(785, "0.png"), (40083, "1.png")]
    results = [dict(a, score=1.0) for a in exported["annotations"]]
    assert average_precision(source, results, "segm") == pytest.approx(1.0)


def test_image_ids_shifted_by_one_move_as_a_chain(tmp_path: Path) -> None:
    data = copy.deepcopy(labelme2coco(tmp_path / "images"))
    for entry in data["images"] + data["annotations"]:  # 0.png and 1.png: ids 2 and 3 here, 1 and 2 after new
        entry["image_id" if "image_id" in entry else "id"] += 2
    assert main.main(["new", str(tmp_path / "p"), "--images", str(tmp_path / "images")]) == 0
    with Project.open(tmp_path / "p.annot") as project:
        assert [(i.id, i.file_name) for i in project.images()] == [(1, "0.png"), (2, "1.png")]
        report = import_coco(project, write_json(tmp_path / "images" / "s.json", data))
        assert [(i.id, i.file_name) for i in project.images()] == [(2, "0.png"), (3, "1.png")]
        assert not any("image id" in w for w in report.warnings)


def test_an_image_someone_labelled_keeps_its_id(tmp_path: Path) -> None:
    data = mmpose(tmp_path / "images")
    with Project.create(tmp_path / "p.annot", tmp_path / "images") as project:
        image = project.add_image("0.png", *SIZE, "h")
        project.add_instance(image.id, project.add_category("person", keypoints=COCO_KEYPOINTS).id, bbox=[1, 1, 2, 2])
        report = import_coco(project, write_json(tmp_path / "images" / "s.json", data))
        assert project.image_by_file_name("0.png").id == 1
        assert project.image_by_file_name("1.png").id == 40083
    assert any("1 image id(s) differ in the project: 785 -> 1" in w for w in report.warnings)


def test_ids_up_to_the_largest_the_store_goes_on_from_are_kept(tmp_path: Path) -> None:
    data = roboflow(tmp_path / "images")
    data["annotations"][0]["id"] = 2**53 - 1
    data["annotations"][1]["score"] = 2**63  # a finite number, stored as a float
    project, _, _ = _import(tmp_path, data)
    with project:
        assert project.instance(2**53 - 1).category_id == 1
        image = project.images()[0]
        with pytest.raises(ValueError, match="at most"):
            project.add_instance(image.id, 1, bbox=[1, 1, 2, 2], id=2**53)
        project.add_instance(image.id, 1, bbox=[1, 1, 2, 2])  # the project can go on
        assert max(i.score or 0 for i in project.instances(image.id)) == float(2**63)
