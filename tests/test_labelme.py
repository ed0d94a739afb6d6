"""labelme folders, written the way labelme 5 writes them (LabelFile.save: indent 2, shapes with
label / points / group_id / description / shape_type / flags / mask, masks as base64 PNG)."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import main
from annotator import masks
from model.errors import InputError
from annotator.labelme import import_labelme
from annotator.store import Project
from tests.conftest import write_images


def _shape(label: str, points: list, shape_type: str = "polygon", group_id: int | None = None,
           mask: np.ndarray | None = None) -> dict:
    encoded = None
    if mask is not None:
        buffer = io.BytesIO()
        Image.fromarray(mask.astype(np.uint8)).save(buffer, format="PNG")
        encoded = base64.b64encode(buffer.getvalue()).decode("utf-8")
    return {"label": label, "points": points, "group_id": group_id, "description": "",
            "shape_type": shape_type, "flags": {}, "mask": encoded}


def _write_labelme(json_path: Path, image_path: Path, shapes: list[dict], size: tuple[int, int]) -> None:
    data = {"version": "5.5.0", "flags": {}, "shapes": shapes,
            "imagePath": os.path.relpath(image_path, json_path.parent), "imageData": None,
            "imageHeight": size[1], "imageWidth": size[0]}
    json_path.write_text(json.dumps(data, ensure_ascii=False, indent=2))


BLOB = np.zeros((6, 8), dtype=bool)
BLOB[1:5, 2:7] = True


@pytest.fixture
def labelme_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    write_images(folder, [(80, 60), (80, 60)])
    _write_labelme(folder / "0.json", folder / "0.png", [
        _shape("dog", [[10, 10], [30, 10], [30, 30], [10, 30]]),
        _shape("box", [[40, 5], [50, 15]], "rectangle"),
        _shape("ball", [[60, 40], [65, 40]], "circle"),
        _shape("blob", [[70, 50], [77, 55]], "mask", mask=BLOB),
        _shape("fence", [[0, 0], [79, 0]], "line"),
    ], (80, 60))
    _write_labelme(folder / "1.json", folder / "1.png", [
        _shape("person", [[5, 5], [25, 5], [25, 40], [5, 40]], group_id=1),
        _shape("nose", [[15, 8]], "point", group_id=1),
        _shape("tail", [[15, 38]], "point", group_id=1),
        _shape("dog", [[40, 5], [50, 5], [50, 15]], group_id=2),
        _shape("dog", [[60, 5], [70, 5], [70, 15]], group_id=2),
        _shape("stray", [[1, 1]], "point"),
    ], (80, 60))
    return folder


def test_labelme_folder_imports_shapes_groups_and_keypoints(tmp_path: Path, labelme_folder: Path) -> None:
    with Project.create(tmp_path / "p.annot", labelme_folder) as project:
        report = import_labelme(project, labelme_folder)
        assert (report.images, report.instances) == (2, 6)
        assert len(report.warnings) == 2
        assert "line 'fence' is not an instance" in report.warnings[0]
        assert "points ['stray'] belong to no polygon" in report.warnings[1]
        categories = {c.name: c for c in project.categories()}
        assert set(categories) == {"dog", "box", "ball", "blob", "person"}
        assert categories["person"].keypoints == ("nose", "tail")

        names = {c.id: c.name for c in project.categories()}
        first = {names[i.category_id]: i for i in project.instances(1)}
        assert first["dog"].polygons == ((10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0),)
        assert first["box"].polygons == ((40.0, 5.0, 50.0, 5.0, 50.0, 15.0, 40.0, 15.0),)
        assert first["box"].bbox == (40.0, 5.0, 10.0, 10.0)
        ball = first["ball"]
        assert ball.area == pytest.approx(np.pi * 25, rel=0.15)
        blob = first["blob"].mask
        assert np.array_equal(blob[50:56, 70:78], BLOB) and blob.sum() == BLOB.sum()

        second = project.instances(2)
        person = next(i for i in second if i.category_id == categories["person"].id)
        assert person.keypoints == (15.0, 8.0, 2.0, 15.0, 38.0, 2.0)
        (dog,) = [i for i in second if i.category_id == categories["dog"].id]
        assert len(dog.polygons) == 2  # two shapes of one group: one instance


def test_points_are_matched_to_an_existing_keypoint_schema_by_name(tmp_path: Path, labelme_folder: Path) -> None:
    with Project.create(tmp_path / "p.annot", labelme_folder) as project:
        person = project.add_category("person", keypoints=["tail", "ear", "nose"])
        import_labelme(project, labelme_folder)
        (instance,) = [i for i in project.instances(2) if i.category_id == person.id]
        assert instance.keypoints == (15.0, 38.0, 2.0, 0.0, 0.0, 0.0, 15.0, 8.0, 2.0)


def test_unknown_point_name_is_refused_and_nothing_is_written(tmp_path: Path, labelme_folder: Path) -> None:
    with Project.create(tmp_path / "p.annot", labelme_folder) as project:
        project.add_category("person", keypoints=["head"])
        before = list(project._db.iterdump())
        with pytest.raises(InputError, match=r"1.json: points \['nose', 'tail'\] are not keypoints"):
            import_labelme(project, labelme_folder)
        assert list(project._db.iterdump()) == before


def test_labels_in_a_separate_folder_find_their_images_through_image_path(tmp_path: Path) -> None:
    images, labels = tmp_path / "images", tmp_path / "labels"
    write_images(images, [(40, 30)])
    labels.mkdir()
    _write_labelme(labels / "0.json", images / "0.png", [_shape("cat", [[1, 1], [9, 1], [9, 9]])], (40, 30))
    code = main.main(["import", str(tmp_path / "p"), str(labels), "--images", str(images)])
    assert code == 0
    with Project.open(tmp_path / "p.annot") as project:
        assert [i.file_name for i in project.images()] == ["0.png"]
        assert project.instance_count() == 1


def test_image_path_outside_the_image_root_is_refused(tmp_path: Path) -> None:
    images, labels = tmp_path / "images", tmp_path / "labels"
    write_images(images, [(40, 30)])
    write_images(tmp_path / "elsewhere", [(40, 30)])
    labels.mkdir()
    _write_labelme(labels / "0.json", tmp_path / "elsewhere" / "0.png", [_shape("cat", [[1, 1], [9, 1], [9, 9]])],
                   (40, 30))
    with Project.create(tmp_path / "p.annot", images) as project:
        with pytest.raises(InputError, match="points outside the image folder"):
            import_labelme(project, labels)
        assert project.image_count() == 0


@pytest.mark.parametrize("shape, message", [
    (_shape("cat", [[1, 1], [9, 1]]), "polygon has 2 points; it needs at least 3"),
    (_shape("cat", [[1, 1], [9, 1], [9, float("nan")]]), "contains nan"),
    (_shape("cat", [[1, 1]], "rectangle"), "rectangle needs 2 corner points"),
    (_shape("cat", [[1, 1], [4, 4]], "mask"), "mask shape needs its box"),
    (_shape("cat", [[1, 1], [4, 4]], "ellipse"), "unknown shape_type 'ellipse'"),
    (dict(_shape("", [[1, 1], [9, 1], [9, 9]])), "'label' must be a non-empty string"),
])
def test_bad_labelme_shapes_name_file_and_shape(tmp_path: Path, shape: dict, message: str) -> None:
    write_images(tmp_path, [(40, 30)])
    _write_labelme(tmp_path / "0.json", tmp_path / "0.png", [shape], (40, 30))
    with Project.create(tmp_path / "p.annot", tmp_path) as project:
        with pytest.raises(InputError) as raised:
            import_labelme(project, tmp_path)
        assert str(raised.value).startswith(f"{tmp_path / '0.json'}: shapes[0]: ")
        assert message in str(raised.value)
        assert project.image_count() == 0


def test_labelme_import_exports_as_coco_with_the_drawn_polygons(tmp_path: Path, labelme_folder: Path) -> None:
    assert main.main(["import", str(tmp_path / "p"), str(labelme_folder)]) == 0
    assert main.main(["export", str(tmp_path / "p"), str(tmp_path / "out.json")]) == 0
    exported = json.loads((tmp_path / "out.json").read_text())
    assert len(exported["annotations"]) == 6
    polygons = [a["segmentation"] for a in exported["annotations"]]
    assert [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]] in polygons
    blob = next(a for a in exported["annotations"] if a["area"] == BLOB.sum())
    outline = masks.decode(masks.from_polygons(blob["segmentation"], 60, 80))
    assert np.array_equal(outline[50:56, 70:78], BLOB)
