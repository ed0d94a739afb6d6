from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annotator import masks
from annotator.coco import export_coco, import_coco
from annotator.store import Project, ReviewState, Source
from tests.annotator.coco_writers import average_precision
from tests.files import write_images, write_json

SIZES = [(80, 60), (64, 48), (100, 75)]
PERSON = {
    "id": 1,
    "name": "person",
    "supercategory": "person",
    "keypoints": ["nose", "left_eye", "right_eye"],
    "skeleton": [[1, 2], [1, 3]],
}
BOX = {"id": 7, "name": "box", "supercategory": "thing"}


def _mask_with_hole(height: int, width: int, offset: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[5 + offset : 35, 8 : 40 + offset] = 1
    mask[15:20, 15:22] = 0  # a hole: only RLE keeps it
    return mask


def _source_coco(folder: Path) -> dict:
    names = write_images(folder, SIZES)
    images = [
        {"id": 10 + i, "file_name": name, "width": w, "height": h} for i, (name, (w, h)) in enumerate(zip(names, SIZES))
    ]
    annotations = []
    for i, image in enumerate(images):
        rle = masks.encode(_mask_with_hole(image["height"], image["width"], i))
        annotations.append(
            {
                "id": 100 + 2 * i,
                "image_id": image["id"],
                "category_id": 1,
                "iscrowd": 0,
                "segmentation": rle,
                "area": masks.area(rle),
                "bbox": list(masks.bbox(rle)),
                "keypoints": [12.5, 9.0, 2, 20.0, 8.0, 1, 0, 0, 0],
                "num_keypoints": 2,
            }
        )
        polygons = [[45, 5, 60, 5, 60, 30, 45, 30], [50, 35, 58, 35, 54, 44]]
        outline = masks.from_polygons(polygons, image["height"], image["width"])
        annotations.append(
            {
                "id": 101 + 2 * i,
                "image_id": image["id"],
                "category_id": 7,
                "iscrowd": 0,
                "segmentation": polygons,
                "area": masks.area(outline),
                "bbox": list(masks.bbox(outline)),
            }
        )
    return {"images": images, "annotations": annotations, "categories": [PERSON, BOX]}


@pytest.fixture
def coco_file(tmp_path: Path) -> Path:
    return write_json(tmp_path / "images" / "source.json", _source_coco(tmp_path / "images"))


def _import(tmp_path: Path, coco_file: Path, name: str = "p.annot") -> Project:
    project = Project.create(tmp_path / name, coco_file.parent)
    import_coco(project, coco_file)
    return project


def test_rle_export_evaluates_to_ap_one_against_the_source(tmp_path: Path, coco_file: Path) -> None:
    with _import(tmp_path, coco_file) as project:
        export_coco(project, tmp_path / "out.json", rle=True)
    exported = json.loads((tmp_path / "out.json").read_text())
    results = [dict(a, score=1.0) for a in exported["annotations"]]
    assert average_precision(coco_file, results, "segm") == pytest.approx(1.0)
    assert average_precision(coco_file, results, "bbox") == pytest.approx(1.0)
    keypoint_results = [r for r in results if r["category_id"] == 1]
    keypoint_ap = average_precision(coco_file, keypoint_results, "keypoints", [1], len(PERSON["keypoints"]))
    assert keypoint_ap == pytest.approx(1.0)


def test_round_trip_keeps_masks_pixel_exact_and_keypoints_and_categories_exact(tmp_path: Path, coco_file: Path) -> None:
    with _import(tmp_path, coco_file) as project:
        export_coco(project, tmp_path / "out.json", rle=True)
    again = Project.create(tmp_path / "again.annot", coco_file.parent)
    import_coco(again, tmp_path / "out.json")
    with _import(tmp_path, coco_file, "first.annot") as first, again:
        assert again.categories() == first.categories()
        for image in first.images():
            other = again.image_by_file_name(image.file_name)
            pairs = zip(first.instances(image.id), again.instances(other.id), strict=True)
            for a, b in pairs:
                assert np.array_equal(a.mask, b.mask)
                assert a.keypoints == b.keypoints
                assert (a.category_id, a.bbox, a.area) == (b.category_id, b.bbox, b.area)


def test_export_has_ids_from_one_and_everything_of_an_instance_in_one_annotation(
    tmp_path: Path, coco_file: Path
) -> None:
    with _import(tmp_path, coco_file) as project:
        export_coco(project, tmp_path / "out.json")
    exported = json.loads((tmp_path / "out.json").read_text())
    for key in ("images", "annotations", "categories"):
        ids = [entry["id"] for entry in exported[key]]
        assert min(ids) >= 1 and len(set(ids)) == len(ids)
    for annotation in exported["annotations"]:
        assert {"segmentation", "bbox", "area", "iscrowd", "image_id", "category_id"} <= set(annotation)
        if annotation["category_id"] == 1:
            assert len(annotation["keypoints"]) == 9 and annotation["num_keypoints"] == 2
    person = next(c for c in exported["categories"] if c["name"] == "person")
    assert person["keypoints"] == PERSON["keypoints"] and person["skeleton"] == PERSON["skeleton"]


def test_polygon_export_keeps_drawn_polygons_and_outlines_masks(tmp_path: Path, coco_file: Path) -> None:
    with _import(tmp_path, coco_file) as project:
        export_coco(project, tmp_path / "out.json")
    exported = json.loads((tmp_path / "out.json").read_text())
    source = json.loads(coco_file.read_text())
    source_by_id = {a["id"]: a for a in source["annotations"]}
    for annotation in exported["annotations"]:
        assert isinstance(annotation["segmentation"], list)  # polygons by default, iscrowd 0
        assert annotation["iscrowd"] == 0
        if annotation["category_id"] == 7:
            assert annotation["segmentation"] == source_by_id[annotation["id"]]["segmentation"]
        else:  # a mask with a hole: the outline covers the mask without its hole
            image = next(i for i in source["images"] if i["id"] == annotation["image_id"])
            outline = masks.decode(masks.from_polygons(annotation["segmentation"], image["height"], image["width"]))
            mask = masks.decode(source_by_id[annotation["id"]]["segmentation"])
            assert (mask & ~outline).sum() == 0
            assert (outline & ~mask).sum() == 5 * 7  # exactly the hole


def test_uncompressed_rle_and_crowd_regions_import(tmp_path: Path) -> None:
    write_images(tmp_path / "images", [(8, 6)])
    mask = np.zeros((6, 8), np.uint8)
    mask[1:4, 2:5] = 1
    flat = mask.flatten(order="F")
    counts, value, run = [], 0, 0
    for pixel in flat:
        if pixel != value:
            counts.append(run)
            value, run = pixel, 0
        run += 1
    counts.append(run)
    coco = {
        "images": [{"id": 1, "file_name": "0.png", "width": 8, "height": 6}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "iscrowd": 1,
                "area": 9,
                "segmentation": {"size": [6, 8], "counts": counts},
                "bbox": [2, 1, 3, 3],
            }
        ],
        "categories": [{"id": 1, "name": "crowd"}],
    }
    with _import(tmp_path, write_json(tmp_path / "images" / "c.json", coco)) as project:
        (instance,) = project.instances(1)
        assert instance.iscrowd and np.array_equal(instance.mask, mask.astype(bool))
        export_coco(project, tmp_path / "out.json")
    (annotation,) = json.loads((tmp_path / "out.json").read_text())["annotations"]
    assert annotation["iscrowd"] == 1 and isinstance(annotation["segmentation"]["counts"], str)


def test_only_done_exports_only_images_marked_done(tmp_path: Path, coco_file: Path) -> None:
    with _import(tmp_path, coco_file) as project:
        project.set_review_state(11, ReviewState.DONE)
        counts = export_coco(project, tmp_path / "out.json", only_done=True)
    exported = json.loads((tmp_path / "out.json").read_text())
    assert [i["id"] for i in exported["images"]] == [11]
    assert {a["image_id"] for a in exported["annotations"]} == {11}
    assert counts == {"images": 1, "annotations": 2, "categories": 2, "proposals_left_out": 0, "damaged_left_out": 0}


def _add_proposals(project: Project, image_id: int, scores: list[float]) -> list[int]:
    image = project.image(image_id)
    ids = []
    for i, score in enumerate(scores):
        mask = np.zeros((image.height, image.width), dtype=np.uint8)
        mask[2 + i : 10 + i, 2:12] = 1
        ids.append(
            project.add_instance(image_id, 7, mask=mask, score=score, source=Source.MODEL, model_version="m@1").id
        )
    return ids


def test_export_leaves_out_proposals_nobody_accepted_unless_asked_for_by_score(tmp_path: Path, coco_file: Path) -> None:
    with _import(tmp_path, coco_file) as project:
        weak, strong = _add_proposals(project, 10, [0.3, 0.9])
        counts = export_coco(project, tmp_path / "labels.json")
        asked = export_coco(project, tmp_path / "with_proposals.json", proposals_from=0.5)
    labels = json.loads((tmp_path / "labels.json").read_text())["annotations"]
    assert sorted(a["id"] for a in labels) == [100, 101, 102, 103, 104, 105]
    assert all("score" not in a for a in labels)
    assert counts["annotations"] == 6 and counts["proposals_left_out"] == 2

    with_proposals = json.loads((tmp_path / "with_proposals.json").read_text())["annotations"]
    assert [(a["id"], a["score"]) for a in with_proposals if "score" in a] == [(strong, 0.9)]
    assert weak not in [a["id"] for a in with_proposals]
    assert asked["annotations"] == 7 and asked["proposals_left_out"] == 1


def test_failed_export_leaves_the_previous_file_intact(
    tmp_path: Path, coco_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.json"
    out.write_text('{"previous": true}')
    import annotator.coco as coco

    with _import(tmp_path, coco_file) as project:

        def broken(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(coco, "annotation_json", broken)  # fails after the images are written
        with pytest.raises(OSError):
            export_coco(project, out)
    assert out.read_text() == '{"previous": true}'
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.json")] == []


def test_import_into_a_project_that_uses_the_ids_renumbers_without_clashes(tmp_path: Path, coco_file: Path) -> None:
    with _import(tmp_path, coco_file) as project:
        renamed = json.loads(coco_file.read_text())
        for image in renamed["images"]:
            image["file_name"] = "copy_" + image["file_name"]
            (coco_file.parent / image["file_name"]).write_bytes(
                (coco_file.parent / image["file_name"][5:]).read_bytes()
            )
        report = import_coco(project, write_json(coco_file.parent / "copy.json", renamed))
        assert (report.images, report.categories, report.instances) == (3, 0, 6)
        assert project.image_count() == 6 and project.instance_count() == 12
        assert len(project.categories()) == 2


# -- property tests -----------------------------------------------------------------------------


@st.composite
def random_masks(draw) -> np.ndarray:
    height, width = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    bits = draw(st.lists(st.booleans(), min_size=height * width, max_size=height * width))
    return np.array(bits, dtype=bool).reshape(height, width)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mask=random_masks())
def test_any_mask_survives_store_and_rle_export_pixel_exact(tmp_path_factory, mask: np.ndarray) -> None:
    folder = tmp_path_factory.mktemp("m")
    write_images(folder / "images", [(mask.shape[1], mask.shape[0])])
    with Project.create(folder / "p.annot", folder / "images") as project:
        image = project.add_image("0.png", mask.shape[1], mask.shape[0], "h")
        category = project.add_category("thing")
        project.add_instance(image.id, category.id, mask=mask)
        export_coco(project, folder / "out.json", rle=True)
    again = Project.create(folder / "again.annot", folder / "images")
    import_coco(again, folder / "out.json")
    with again:
        (instance,) = again.instances(1)
        assert np.array_equal(instance.mask, mask)
        assert instance.area == mask.sum()


coordinate = st.floats(0, 60, allow_nan=False).map(lambda v: round(v, 2))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    polygons=st.lists(
        st.lists(st.tuples(coordinate, coordinate), min_size=3, max_size=8).map(
            lambda points: [v for p in points for v in p]
        ),
        min_size=1,
        max_size=3,
    ),
    keypoints=st.lists(st.tuples(coordinate, coordinate, st.sampled_from([0, 1, 2])), min_size=2, max_size=2),
)
def test_polygons_and_keypoints_round_trip_exactly(
    tmp_path_factory, polygons: list[list[float]], keypoints: list[tuple]
) -> None:
    folder = tmp_path_factory.mktemp("p")
    write_images(folder, [(64, 64)])
    flat = [float(v) for point in keypoints for v in point]
    coco = {
        "images": [{"id": 1, "file_name": "0.png", "width": 64, "height": 64}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "segmentation": polygons,
                "bbox": [0, 0, 1, 1],
                "area": 1,
                "iscrowd": 0,
                "keypoints": flat,
            }
        ],
        "categories": [{"id": 1, "name": "thing", "keypoints": ["a", "b"], "skeleton": [[1, 2]]}],
    }
    with _import(folder, write_json(folder / "in.json", coco)) as project:
        export_coco(project, folder / "out.json")
    (annotation,) = json.loads((folder / "out.json").read_text())["annotations"]
    assert annotation["segmentation"] == polygons
    assert annotation["keypoints"] == flat
    assert annotation["num_keypoints"] == sum(1 for v in flat[2::3] if v > 0)
    expected = masks.from_polygons(polygons, 64, 64)
    assert annotation["area"] == masks.area(expected)
    assert annotation["bbox"] == list(masks.bbox(expected))


def test_parallel_export_writes_the_same_file_as_a_single_process(
    tmp_path: Path, coco_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import annotator.coco as coco

    monkeypatch.setattr(coco, "IMAGES_PER_PIECE", 1)  # three pieces, over two worker processes
    monkeypatch.setattr(coco, "PARALLEL_EXPORT_FROM", 0)
    monkeypatch.setattr(coco.time, "strftime", lambda *args: "fixed")
    with _import(tmp_path, coco_file) as project:
        _add_proposals(project, 11, [0.3, 0.9])
        export_coco(project, tmp_path / "single.json", proposals_from=0.5, workers=1)
        export_coco(project, tmp_path / "parallel.json", proposals_from=0.5, workers=2)
    assert (tmp_path / "parallel.json").read_text() == (tmp_path / "single.json").read_text()
    assert len(json.loads((tmp_path / "parallel.json").read_text())["annotations"]) == 7


def test_export_gets_ordinary_file_permissions(tmp_path: Path, coco_file: Path) -> None:
    import os

    umask = os.umask(0o022)
    try:
        with _import(tmp_path, coco_file) as project:
            export_coco(project, tmp_path / "out.json")
    finally:
        os.umask(umask)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o644
