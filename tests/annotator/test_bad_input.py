"""Bad input gets one clear line naming the file and the problem, and the project stays as it was."""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import main
from annotator import masks
from annotator.coco import import_coco
from annotator.interchange import read_json
from annotator.store import MAX_ID, Project
from model.errors import InputError
from tests.files import write_images, write_json

VALID = {
    "images": [
        {"id": 1, "file_name": "0.png", "width": 40, "height": 30},
        {"id": 2, "file_name": "1.png", "width": 40, "height": 30},
    ],
    "annotations": [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "iscrowd": 0,
            "area": 100,
            "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]],
            "bbox": [5, 5, 10, 10],
            "keypoints": [6, 6, 2, 7, 7, 2, 0, 0, 0],
        },
        {
            "id": 2,
            "image_id": 2,
            "category_id": 2,
            "iscrowd": 0,
            "area": 100,
            "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]],
            "bbox": [5, 5, 10, 10],
        },
    ],
    "categories": [
        {"id": 1, "name": "person", "keypoints": ["a", "b", "c"], "skeleton": [[1, 2]]},
        {"id": 2, "name": "box"},
    ],
}


def _set(path: str, value: object) -> Callable[[dict], None]:
    """A change to the valid file: ``"annotations.0.bbox"`` = value."""

    def change(data: dict) -> None:
        *parents, last = path.split(".")
        target = data
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return change


def _delete(path: str) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        *parents, last = path.split(".")
        target = data
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        del target[last]

    return change


def _append(key: str, entry: dict) -> Callable[[dict], None]:
    return lambda data: data[key].append(entry)


CASES = {
    "image list missing": (_delete("images"), "no 'images' list"),
    "file_name missing": (_delete("images.0.file_name"), "images[0]: missing 'file_name'"),
    "width is text": (_set("images.0.width", "40"), "'width' must be an integer, got str"),
    "unknown image id": (_set("annotations.0.image_id", 99), "image_id 99 is not among the file's images"),
    "unknown category id": (_set("annotations.0.category_id", 42), "category_id 42 is not among"),
    "category id 2**63": (_set("categories.1.id", 2**63), f"category id {2**63} is over {MAX_ID}"),
    "duplicate image id": (_set("images.1.id", 1), "duplicate image id 1"),
    "duplicate annotation id": (_set("annotations.1.id", 1), "duplicate annotation id 1"),
    "duplicate category id": (_set("categories.1.id", 1), "duplicate category id 1"),
    "annotation id 2**63": (_set("annotations.0.id", 2**63), f"annotation id {2**63} is over {MAX_ID}"),
    "annotation id the store cannot go on from": (_set("annotations.0.id", 2**63 - 1), "the largest id a project"),
    "image id 2**63": (_set("images.1.id", 2**63), f"image id {2**63} is over {MAX_ID}"),
    "score 2**1100": (lambda d: d["annotations"][0].update(score=2**1100), "'score' must be a finite number"),
    "score as text": (lambda d: d["annotations"][0].update(score="0.9"), "'score' must be a finite number"),
    "polygon of 4 numbers": (
        _set("annotations.1.segmentation", [[1, 1, 5, 5]]),
        "has 4 numbers; a polygon needs an even count of at least 6",
    ),
    "polygon of odd count": (_set("annotations.1.segmentation", [[1, 1, 5, 5, 9, 1, 3]]), "has 7 numbers"),
    "RLE of another size": (
        _set("annotations.1.segmentation", masks.encode(np.ones((10, 10), np.uint8))),
        "RLE size [10, 10] differs from the image's [height, width] [30, 40]",
    ),
    "RLE counts garbage": (
        _set("annotations.1.segmentation", {"size": [30, 40], "counts": "zzzz"}),
        "not a valid compressed RLE string",
    ),
    "NaN coordinate": (
        _set("annotations.1.segmentation", [[1, 1, 5, math.nan, 9, 1]]),
        "contains nan; coordinates must be finite",
    ),
    "infinite bbox": (_set("annotations.1.bbox", [1, 1, math.inf, 3]), "contains inf"),
    "bbox of 1e300": (
        _set("annotations.1.bbox", [1, 1, 1e300, 3]),
        "reaches more than one image size outside the 40x30 image",
    ),
    "bbox of negative width": (_set("annotations.1.bbox", [10, 1, -5, 3]), "has a negative width or height"),
    "keypoint far outside": (
        _set("annotations.0.keypoints", [6, 6, 2, -1e10, 7, 2, 0, 0, 0]),
        "keypoint 2 at (-1e+10, 7) lies more than one image size outside the 40x30 image",
    ),
    "coordinate of 5000 digits": (
        _set("annotations.1.bbox", [1, 1, 10**1100, 3]),
        "contains an integer too large to be a coordinate",
    ),
    "keypoints of wrong length": (
        _set("annotations.0.keypoints", [1, 2, 2, 3, 4, 2]),
        "'keypoints' must hold 3 x 3 = 9 numbers [x, y, v] for category 'person', got 6",
    ),
    "keypoint visibility 3": (
        _set("annotations.0.keypoints", [1, 2, 3, 3, 4, 2, 0, 0, 0]),
        "keypoint 1 has visibility 3",
    ),
    "keypoints as text": (_set("annotations.0.keypoints", "1 2 2"), "numbers [x, y, v] for category 'person', got str"),
    "keypoints of different counts in a category without names": (
        lambda d: (
            d["annotations"][1].update(keypoints=[1, 2, 2]),
            d["annotations"].append(dict(d["annotations"][1], id=3, keypoints=[1, 2, 2, 3, 4, 2])),
        ),
        "'keypoints' holds 6 numbers, annotations[1] 3: category 'box' names no keypoints",
    ),
    "iscrowd 2": (_set("annotations.1.iscrowd", 2), "'iscrowd' must be 0 or 1, got 2"),
    "no geometry": (
        lambda d: (d["annotations"][1].pop("segmentation"), d["annotations"][1].pop("bbox")),
        "has neither a segmentation nor a bbox",
    ),
    "segmentation as text": (_set("annotations.1.segmentation", "abc"), "'segmentation' must be a list"),
    "uncompressed RLE with a negative run": (
        _set("annotations.1.segmentation", {"size": [30, 40], "counts": [100, 0, -3, 1103]}),
        "a list of non-negative integers",
    ),
    "RLE counts not ASCII": (
        _set("annotations.1.segmentation", {"size": [30, 40], "counts": "1\u00e9"}),
        "outside the compressed-RLE alphabet",
    ),
    "RLE number longer than pycocotools reads": (
        _set("annotations.1.segmentation", {"size": [30, 40], "counts": "PPPPPPPPP0"}),
        "a number too large",
    ),
    "absolute file_name": (_set("images.1.file_name", "/etc/passwd"), "is absolute"),
    "NUL in file_name": (_set("images.1.file_name", "1.png\x00.jpg"), "'1.png\\x00.jpg' holds a control character"),
    "newline in file_name": (
        _set("images.1.file_name", "1.png\nerror: forged"),
        "'1.png\\nerror: forged' holds a control character or line break",
    ),
    "line separator in file_name": (_set("images.1.file_name", "1\u2028.png"), "holds a control character"),
    "duplicate category name with a newline": (
        lambda d: [category.update(name="bo\nx") for category in d["categories"]],
        "categories[1]: duplicate category name 'bo\\nx'",
    ),
    "file_name climbing out": (_set("images.1.file_name", "../outside.png"), "climbs out of the image root"),
    "missing image file": (_set("images.1.file_name", "missing.png"), "missing.png: image file not found"),
    "image of another size": (_set("images.1.width", 41), "says 1.png is 41x30, but the image file is 40x30"),
    "unreadable image": (
        _append("images", {"id": 3, "file_name": "text.png", "width": 4, "height": 4}),
        "text.png: not a readable image",
    ),
    "truncated image": (
        _append("images", {"id": 3, "file_name": "truncated.jpg", "width": 40, "height": 30}),
        "truncated.jpg: image data is truncated or corrupt",
    ),
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    write_images(images, [(40, 30), (40, 30)])
    (images / "text.png").write_text("this is not an image")
    Image.fromarray(np.full((30, 40, 3), 128, np.uint8)).save(images / "full.jpg", quality=95)
    data = (images / "full.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return images


def _snapshot(project: Project) -> list:
    return list(project._db.iterdump())


@pytest.fixture
def project(tmp_path: Path, folder: Path) -> Project:
    """A project that already holds labels, which a failed import must not touch."""
    project = Project.create(tmp_path / "p.annot", folder)
    image = project.add_image("0.png", 40, 30, "h")
    category = project.add_category("existing")
    project.add_instance(image.id, category.id, polygons=[[1, 1, 9, 1, 9, 9]])
    yield project
    project.close()


@pytest.mark.parametrize("case", CASES)
def test_bad_coco_file_is_refused_naming_file_and_problem(case: str, project: Project, folder: Path) -> None:
    change, message = CASES[case]
    data = copy.deepcopy(VALID)
    change(data)
    source = write_json(folder / "labels.json", data)
    before = _snapshot(project)
    with pytest.raises(InputError) as raised:
        import_coco(project, source)
    assert str(raised.value).startswith(str(source))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
    assert _snapshot(project) == before


def test_valid_file_of_the_table_imports(project: Project, folder: Path) -> None:
    report = import_coco(project, write_json(folder / "labels.json", VALID))
    assert (report.images, report.instances) == (1, 2)


@pytest.mark.parametrize(
    "text, message",
    [("{", "not valid JSON: Expecting property name"), ("[]", "must hold a JSON object"), ("", "not valid JSON")],
)
def test_malformed_json_is_refused(text: str, message: str, project: Project, folder: Path) -> None:
    source = folder / "labels.json"
    source.write_text(text)
    before = _snapshot(project)
    with pytest.raises(InputError, match=message):
        import_coco(project, source)
    assert _snapshot(project) == before


def _nested(depth: int) -> str:
    return '{"images": [], "categories": [], "annotations": [], "x": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize(
    "text, message",
    [
        (_nested(1000), "JSON nested too deeply to read"),
        ('{"images": [{"id": ' + "7" * 4400 + "}]}", "holds an integer of more than 4,300 digits"),
        (
            '{"images": [], "annotations": [], "categories": [{"id": 1, "name": "\\ud800x"}]}',
            "a string holds a lone surrogate",
        ),
        ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "\\udc00"}]}', "lone surrogate"),
        (b"\xff\xfe{}", "not a text file (expected UTF-8 JSON)"),
    ],
)
def test_json_the_reader_cannot_take_is_one_line(
    text: str | bytes, message: str, project: Project, folder: Path, capsys: pytest.CaptureFixture
) -> None:
    source = folder / "labels.json"
    source.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = _snapshot(project)
    assert main.main(["import", str(project.path), str(source)]) == main.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"error: {source}: ") and err.count("\n") == 1
    assert message in err
    assert _snapshot(project) == before


def test_paired_surrogate_escapes_are_text(project: Project, folder: Path) -> None:
    data = copy.deepcopy(VALID)
    data["categories"][1]["name"] = "\U0001f4e6 box"  # json.dumps writes it as an escaped surrogate pair
    import_coco(project, write_json(folder / "labels.json", data))
    assert project.category_by_name("\U0001f4e6 box") is not None


def test_a_fifo_or_a_link_to_dev_zero_is_refused_at_once(project: Project, folder: Path) -> None:
    fifo = folder / "fifo.json"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    zero = folder / "zero.json"
    zero.symlink_to("/dev/zero")  # reading it would never end
    for source in (fifo, zero):
        started = time.monotonic()
        with pytest.raises(InputError, match="not a regular file"):
            import_coco(project, source)
        assert time.monotonic() - started < 5


def test_json_over_the_size_limit_is_refused_before_reading(folder: Path) -> None:
    source = write_json(folder / "labels.json", VALID)
    with pytest.raises(InputError, match=f"{source.stat().st_size:,} bytes, over the limit of 100 for a JSON file"):
        read_json(source, max_bytes=100)
    assert read_json(source) == VALID


def test_image_over_the_pixel_limit_is_refused(project: Project, folder: Path) -> None:
    data = copy.deepcopy(VALID)
    before = _snapshot(project)
    with pytest.raises(InputError, match=r"1.png: image has 0.0 megapixels, over the limit"):
        import_coco(project, write_json(folder / "labels.json", data), max_pixels=1000)
    assert _snapshot(project) == before


def test_cli_prints_one_line_without_traceback_and_exits_2(
    tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture
) -> None:
    data = copy.deepcopy(VALID)
    data["categories"][1]["id"] = 2**63
    source = write_json(folder / "labels.json", data)
    assert main.main(["import", str(tmp_path / "new"), str(source)]) == main.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {source}: categories[1]: category id {2**63} is over {MAX_ID}")
    assert not (tmp_path / "new.annot").exists()  # a failed import into a new project leaves no file


def test_cli_import_into_an_existing_project_changes_nothing_on_error(
    tmp_path: Path, folder: Path, project: Project, capsys: pytest.CaptureFixture
) -> None:
    data = copy.deepcopy(VALID)
    data["annotations"][1]["segmentation"] = [[1, 2, 3]]
    before = _snapshot(project)
    source = write_json(folder / "labels.json", data)
    assert main.main(["import", str(project.path), str(source)]) == main.EXIT_BAD_INPUT
    assert "has 3 numbers" in capsys.readouterr().err
    assert _snapshot(project) == before


def test_cli_reports_a_missing_project(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main.main(["info", str(tmp_path / "nothing.annot")]) == main.EXIT_BAD_INPUT
    assert capsys.readouterr().err == f"error: {tmp_path / 'nothing.annot'}: no project file here\n"


def test_new_project_over_a_folder_with_a_broken_image_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    images = tmp_path / "imgs"
    write_images(images, [(20, 10)])
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert main.main(["new", str(tmp_path / "p"), "--images", str(images)]) == main.EXIT_BAD_INPUT
    assert "broken.png: image data is truncated or corrupt" in capsys.readouterr().err
    assert not (tmp_path / "p.annot").exists()


def test_export_to_an_unwritable_place_is_one_line(
    tmp_path: Path, project: Project, capsys: pytest.CaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main.main(["export", str(project.path), str(blocker / "out.json")])
    assert code == main.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"error: {blocker / 'out.json'}: ") and "Traceback" not in err
