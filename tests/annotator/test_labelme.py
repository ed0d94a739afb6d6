"""labelme folders, written the way labelme 5 writes them (LabelFile.save: indent 2, shapes with
label / points / group_id / description / shape_type / flags / mask, masks as base64 PNG)."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import main
from annotator import masks
from annotator.labelme import import_labelme
from annotator.store import Project
from model.errors import InputError
from tests.files import labelme_shape, write_images, write_labelme

try:
    import resource
except ImportError:  # Windows
    resource = None

ROOT = Path(__file__).resolve().parents[2]
posix_only = pytest.mark.skipif(resource is None or not hasattr(os, "mkfifo"), reason="FIFOs and rlimits are POSIX")


BLOB = np.zeros((6, 8), dtype=bool)
BLOB[1:5, 2:7] = True


@pytest.fixture
def labelme_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    write_images(folder, [(80, 60), (80, 60)])
    write_labelme(
        folder / "0.json",
        folder / "0.png",
        [
            labelme_shape("dog", [[10, 10], [30, 10], [30, 30], [10, 30]]),
            labelme_shape("box", [[40, 5], [50, 15]], "rectangle"),
            labelme_shape("ball", [[60, 40], [65, 40]], "circle"),
            labelme_shape("blob", [[70, 50], [77, 55]], "mask", mask=BLOB),
            labelme_shape("fence", [[0, 0], [79, 0]], "line"),
        ],
        (80, 60),
    )
    write_labelme(
        folder / "1.json",
        folder / "1.png",
        [
            labelme_shape("person", [[5, 5], [25, 5], [25, 40], [5, 40]], group_id=1),
            labelme_shape("nose", [[15, 8]], "point", group_id=1),
            labelme_shape("tail", [[15, 38]], "point", group_id=1),
            labelme_shape("dog", [[40, 5], [50, 5], [50, 15]], group_id=2),
            labelme_shape("dog", [[60, 5], [70, 5], [70, 15]], group_id=2),
            labelme_shape("stray", [[1, 1]], "point"),
        ],
        (80, 60),
    )
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


def test_importing_a_labelme_folder_twice_skips_what_the_images_hold_already(
    tmp_path: Path, labelme_folder: Path
) -> None:
    with Project.create(tmp_path / "p.annot", labelme_folder) as project:
        import_labelme(project, labelme_folder)
        again = import_labelme(project, labelme_folder)
        assert (again.instances, again.duplicates) == (0, 6)
        assert "skipped 6 already in the project" in again.summary()
        assert project.instance_count() == 6
        kept = import_labelme(project, labelme_folder, duplicates="keep")
        assert (kept.instances, kept.duplicates) == (6, 0)
        assert project.instance_count() == 12


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
    write_labelme(labels / "0.json", images / "0.png", [labelme_shape("cat", [[1, 1], [9, 1], [9, 9]])], (40, 30))
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
    write_labelme(
        labels / "0.json", tmp_path / "elsewhere" / "0.png", [labelme_shape("cat", [[1, 1], [9, 1], [9, 9]])], (40, 30)
    )
    with Project.create(tmp_path / "p.annot", images) as project:
        with pytest.raises(InputError, match="points outside the image folder"):
            import_labelme(project, labels)
        assert project.image_count() == 0


@pytest.mark.parametrize(
    "shape, message",
    [
        (labelme_shape("cat", [[1, 1], [9, 1]]), "polygon has 2 points; it needs at least 3"),
        (labelme_shape("cat", [[1, 1], [9, 1], [9, float("nan")]]), "contains nan"),
        (labelme_shape("cat", [[1, 1]], "rectangle"), "rectangle needs 2 corner points"),
        (labelme_shape("cat", [[1, 1], [4, 4]], "mask"), "mask shape needs its box"),
        (labelme_shape("cat", [[1, 1], [4, 4]], "ellipse"), "unknown shape_type 'ellipse'"),
        (dict(labelme_shape("", [[1, 1], [9, 1], [9, 9]])), "'label' must be a non-empty string"),
    ],
)
def test_bad_labelme_shapes_name_file_and_shape(tmp_path: Path, shape: dict, message: str) -> None:
    write_images(tmp_path, [(40, 30)])
    write_labelme(tmp_path / "0.json", tmp_path / "0.png", [shape], (40, 30))
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


def _run_import(project: Path, folder: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """``main.py import`` in a child process, with 4 GiB of address space: a crash, a hang or a
    file read without end fails the test instead of taking the test run (or the machine) with it."""

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "import", str(project), str(folder)],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        preexec_fn=limit_memory,
        cwd=ROOT,
    )


def _one_line_error(err: str, path: Path, problem: str) -> None:
    assert err.startswith(f"error: {path}: ") and err.count("\n") == 1 and "Traceback" not in err
    assert problem in err


@posix_only
def test_circle_of_huge_radius_is_bounded_to_the_image_before_it_is_rasterised(tmp_path: Path) -> None:
    write_images(tmp_path, [(40, 30)])
    write_labelme(
        tmp_path / "0.json",
        tmp_path / "0.png",
        [
            labelme_shape("sun", [[10, 10], [1e10, 10]], "circle"),
            labelme_shape("moon", [[1e10, 10], [1e10, 15]], "circle"),
        ],
        (40, 30),
    )
    done = _run_import(tmp_path / "p", tmp_path)
    assert done.returncode == 0, done.stderr  # pycocotools crashed with SIGSEGV on the 64-gon of radius 1e10
    assert done.stderr == f"warning: {tmp_path / '0.json'}: shapes[1]: circle 'moon' lies outside the image; left out\n"
    with Project.open(tmp_path / "p.annot") as project:
        (sun,) = project.instances(1)
        assert sun.mask.all()
        x0, y0, x1, y1 = masks.polygon_bounds(30, 40)
        xs, ys = sun.polygons[0][0::2], sun.polygons[0][1::2]
        assert x0 <= min(xs) and max(xs) <= x1 and y0 <= min(ys) and max(ys) <= y1  # and so is what export writes


@pytest.mark.parametrize(
    "image_path, shown", [("0.png\x00x", r"'0.png\x00x'"), ("0\n.png", r"'0\n.png'"), ("0\u2028.png", r"'0\u2028.png'")]
)
def test_control_characters_in_image_path_are_refused_in_one_escaped_line(
    tmp_path: Path, image_path: str, shown: str, capsys: pytest.CaptureFixture
) -> None:
    write_images(tmp_path, [(40, 30)])
    data = {
        "version": "5.5.0",
        "flags": {},
        "shapes": [labelme_shape("cat", [[1, 1], [9, 1], [9, 9]])],
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": 30,
        "imageWidth": 40,
    }
    (tmp_path / "0.json").write_text(json.dumps(data))
    assert main.main(["import", str(tmp_path / "p"), str(tmp_path)]) == main.EXIT_BAD_INPUT
    _one_line_error(
        capsys.readouterr().err, tmp_path / "0.json", f"imagePath {shown} holds a control character or a line break"
    )
    assert not (tmp_path / "p.annot").exists()


def test_label_with_a_line_break_is_refused_in_one_escaped_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_images(tmp_path, [(40, 30)])
    for label, shown in (("cat\ndog", r"'cat\ndog'"), ("cat\x00", r"'cat\x00'"), ("cat\u2029", r"'cat\u2029'")):
        shapes = [labelme_shape(label, [[1, 1], [9, 1]], "line")]  # even where it would only be named in a warning
        data = {
            "version": "5.5.0",
            "flags": {},
            "shapes": shapes,
            "imagePath": "0.png",
            "imageData": None,
            "imageHeight": 30,
            "imageWidth": 40,
        }
        (tmp_path / "0.json").write_text(json.dumps(data))
        assert main.main(["import", str(tmp_path / "p"), str(tmp_path)]) == main.EXIT_BAD_INPUT
        _one_line_error(capsys.readouterr().err, tmp_path / "0.json", f"shapes[0]: 'label' {shown} holds a control")


def _bomb_png(width: int, height: int) -> bytes:
    """A black 1-bit PNG of ``width x height``: 20000 x 20000 takes 48 KB and 400 MB decoded."""
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_mask_png_larger_than_its_image_is_refused_before_it_is_decoded(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_images(tmp_path, [(40, 30)])
    shape = labelme_shape("blob", [[0, 0], [39, 29]], "mask")
    shape["mask"] = base64.b64encode(_bomb_png(20000, 20000)).decode("ascii")
    write_labelme(tmp_path / "0.json", tmp_path / "0.png", [shape], (40, 30))
    assert main.main(["import", str(tmp_path / "p"), str(tmp_path)]) == main.EXIT_BAD_INPUT
    _one_line_error(
        capsys.readouterr().err,
        tmp_path / "0.json",
        "shapes[0]: 'mask' is a 20000x20000 PNG, larger than the 40x30 image",
    )


def test_declared_image_size_over_the_pixel_limit_is_refused_before_any_mask_is_decoded(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_images(tmp_path, [(40, 30)])
    shape = labelme_shape("blob", [[0, 0], [39, 29]], "mask")
    shape["mask"] = base64.b64encode(_bomb_png(20000, 20000)).decode("ascii")
    write_labelme(tmp_path / "0.json", tmp_path / "0.png", [shape], (20000, 20000))
    assert main.main(["import", str(tmp_path / "p"), str(tmp_path), "--max-pixels", "1000000"]) == main.EXIT_BAD_INPUT
    _one_line_error(
        capsys.readouterr().err, tmp_path / "0.json", "declares a 20000x20000 image, over the limit of 1 megapixels"
    )


@posix_only
@pytest.mark.parametrize("make", ["fifo", "dev_zero"])
def test_json_name_on_a_fifo_or_dev_zero_is_refused_without_reading_it(tmp_path: Path, make: str) -> None:
    folder = tmp_path / "data"
    write_images(folder, [(40, 30)])
    write_labelme(folder / "0.json", folder / "0.png", [labelme_shape("cat", [[1, 1], [9, 1], [9, 9]])], (40, 30))
    hostile = folder / "x.json"
    if make == "fifo":
        os.mkfifo(hostile)  # opening it for reading waits for a writer that never comes
    else:
        hostile.symlink_to("/dev/zero")  # reading it never ends, and fills the memory
    done = _run_import(tmp_path / "p", folder, timeout=30)
    assert done.returncode == main.EXIT_BAD_INPUT
    _one_line_error(done.stderr, hostile, "not a regular file")
    assert not (tmp_path / "p.annot").exists()
