"""labelme and YOLO segmentation exports, read back: the labelme folder through our importer and
through a reader written here as labelme 5's ``LabelFile.load`` reads a file; the YOLO dataset
through a reader written here as Ultralytics reads one (data.yaml, train.txt, the label file found
by putting ``labels`` for the last ``images`` folder of the image's path), rasterised with
``cv2.fillPoly`` and compared with the stored masks. Neither labelme nor Ultralytics is a
dependency of the project, so their loaders are not used."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import main
from annotator.labelme import import_labelme
from annotator.labelme_export import export_labelme
from annotator.store import Project, ReviewState, Source
from annotator.yolo_export import export_yolo, joined_outline
from tests.files import write_images

WIDTH, HEIGHT = 80, 60

# labelme 5's shape types and the number of points each has (labelme's _validate_shape_semantics)
LABELME_SHAPE_TYPES = ("polygon", "rectangle", "circle", "line", "point", "linestrip", "points", "mask")
LABELME_POINT_COUNTS = {"point": 1, "rectangle": 2, "line": 2, "circle": 2, "mask": 2}
LABELME_FILE_KEYS = {"version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth"}
LABELME_SHAPE_KEYS = {"label", "points", "group_id", "description", "shape_type", "flags", "mask"}


def two_part_mask() -> np.ndarray:
    """Two rectangles, the larger with a 3x3 hole (which polygons cannot hold)."""
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[5:20, 5:25] = True
    mask[30:50, 40:70] = True
    mask[38:41, 50:53] = False
    return mask


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """Images of every kind an export meets: labelled (a traced mask in two parts, a drawn polygon
    with keypoints, a box), only a proposal, done without labels, a polygon reaching outside the
    image, one under a folder named ``images``, and one nobody labelled."""
    root = tmp_path / "photos"
    write_images(root, [(WIDTH, HEIGHT)] * 6)
    for index, folder in ((3, "sub"), (4, "images")):
        (root / folder).mkdir()
        shutil.move(root / f"{index}.png", root / folder / f"{index}.png")
    project = Project.create(tmp_path / "p.annot", root)
    names = ["0.png", "1.png", "2.png", "sub/3.png", "images/4.png", "5.png"]
    images = [project.add_image(name, WIDTH, HEIGHT, f"h{i}") for i, name in enumerate(names)]
    cat = project.add_category("cat")
    person = project.add_category("person", keypoints=["nose", "tail"], skeleton=[(1, 2)])
    project.add_category("unused")
    project.add_instance(images[0].id, cat.id, mask=two_part_mask())
    project.add_instance(
        images[0].id, person.id, polygons=[[10, 22, 30, 22, 30, 55, 10, 55]], keypoints=[15, 25, 2, 20, 50, 2]
    )
    project.add_instance(images[0].id, cat.id, bbox=[50, 5, 10, 10])
    project.add_instance(images[1].id, cat.id, mask=two_part_mask(), score=0.9, source=Source.MODEL)
    project.set_review_state(images[2].id, ReviewState.DONE)
    project.add_instance(images[3].id, cat.id, polygons=[[-5, -5, 20, -5, 20, 20, -5, 20]])
    square = np.zeros((HEIGHT, WIDTH), dtype=bool)
    square[10:30, 10:30] = True
    project.add_instance(images[4].id, person.id, mask=square, keypoints=[0, 0, 0, 20, 20, 2])
    yield project
    project.close()


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / max((a | b).sum(), 1)


def stored_masks(project: Project, file_name: str) -> list[tuple[str, np.ndarray]]:
    """``(category name, mask)`` of the labels people kept on an image; a box-only one as its box."""
    names = {c.id: c.name for c in project.categories()}
    found = []
    for instance in project.instances(project.image_by_file_name(file_name).id):
        if instance.source == Source.MODEL:
            continue
        mask = instance.mask
        if mask is None:
            x, y, w, h = (int(v) for v in instance.bbox)
            mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
            mask[y : y + h, x : x + w] = True
        found.append((names[instance.category_id], mask))
    return found


# -- labelme ------------------------------------------------------------------------------------


def read_labelme_5(path: Path) -> dict:
    """A labelme file as labelme 5's ``LabelFile.load`` reads it, with what it requires checked:
    the top-level keys it writes, ``imageData`` null so ``imagePath`` is read (relative to the
    file) and the image's size matching, and each shape's keys, type and point count."""
    data = json.loads(path.read_text(encoding="utf-8"))
    assert set(data) == LABELME_FILE_KEYS
    assert data["imageData"] is None and data["flags"] == {} and data["version"].startswith("5.")
    image = path.parent / data["imagePath"]
    with Image.open(image) as pixels:
        assert pixels.size == (data["imageWidth"], data["imageHeight"])
    for shape in data["shapes"]:
        assert set(shape) == LABELME_SHAPE_KEYS
        assert isinstance(shape["label"], str) and shape["label"]
        assert shape["shape_type"] in LABELME_SHAPE_TYPES
        assert shape["group_id"] is None or type(shape["group_id"]) is int
        assert shape["mask"] is None and shape["flags"] == {}
        points = shape["points"]
        assert all(len(p) == 2 and all(type(v) in (int, float) for v in p) for p in points)
        assert len(points) == LABELME_POINT_COUNTS.get(shape["shape_type"], max(len(points), 3))
    return data | {"image": image}


def test_labelme_export_writes_a_file_per_labelled_or_done_image_as_labelme_5_reads_it(project, tmp_path):
    out = tmp_path / "labelme"
    report = export_labelme(project, out)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
    assert files == ["0.json", "2.json", "images/4.json", "sub/3.json"]  # not 1.png (a proposal) nor 5.png
    assert (report.files, report.labels, report.proposals_left_out, report.images_without_labels) == (4, 5, 1, 2)
    read = {name: read_labelme_5(out / name) for name in files}
    for name, data in read.items():
        image_name = name.removesuffix(".json") + ".png"
        assert data["image"].resolve() == project.image_root / image_name
    assert read["2.json"]["shapes"] == []  # done, and nothing on it
    shapes = read["0.json"]["shapes"]
    kinds = [(s["label"], s["shape_type"], s["group_id"]) for s in shapes]
    assert kinds == [
        ("cat", "polygon", 1),  # two parts of one mask: linked by their group
        ("cat", "polygon", 1),
        ("person", "polygon", 2),
        ("nose", "point", 2),  # keypoints: point shapes named as the keypoints, in the person's group
        ("tail", "point", 2),
        ("cat", "rectangle", None),  # a box, one shape: no group, as labelme draws it
    ]
    assert shapes[2]["points"] == [[10, 22], [30, 22], [30, 55], [10, 55]]  # the outline as drawn
    assert shapes[5]["points"] == [[50, 5], [60, 15]]
    assert [s["label"] for s in read["images/4.json"]["shapes"]] == ["person", "tail"]  # nose has no position


def test_labelme_export_imports_back_as_the_same_labels(project, tmp_path):
    out = tmp_path / "labelme"
    export_labelme(project, out)
    with Project.create(tmp_path / "back.annot", project.image_root) as back:
        report = import_labelme(back, out)
        assert report.warnings == []
        assert {c.name: c.keypoints for c in back.categories()} == {"cat": (), "person": ("nose", "tail")}
        for image in back.images():
            before, after = stored_masks(project, image.file_name), stored_masks(back, image.file_name)
            assert [name for name, _ in after] == [name for name, _ in before]
            for (_, a), (_, b) in zip(before, after):
                assert mask_iou(a, b) >= 0.95  # traced outlines lose only the hole
        keypoints = [i.keypoints for i in back.iter_instances() if i.keypoints is not None]
        originals = [i.keypoints for i in project.iter_instances() if i.keypoints is not None]
        assert keypoints == originals


def test_labelme_export_into_the_image_folder_puts_each_file_beside_its_image(project, tmp_path):
    export_labelme(project, project.image_root)
    data = read_labelme_5(project.image_root / "sub" / "3.json")
    assert data["imagePath"] == "3.png"


# -- YOLO ---------------------------------------------------------------------------------------


def read_data_yaml(path: Path) -> dict:
    """The keys of data.yaml as written: ``key: value`` lines, ``names`` an indented ``id: name``
    block, strings either plain or double-quoted (read as JSON strings), comments after ``#``."""
    data: dict = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.strip().partition(":")
        value = value.split("  #")[0].strip()
        value = json.loads(value) if value.startswith('"') else value
        if line.startswith("  "):
            data["names"][int(key)] = value
        else:
            data[key] = value if value else {}
    return data


def label_path(image_path: str) -> str:
    """Where Ultralytics looks for an image's labels (its ``img2label_paths``)."""
    images, labels = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return labels.join(image_path.rsplit(images, 1)).rsplit(".", 1)[0] + ".txt"


def read_yolo_dataset(data_yaml: Path) -> tuple[dict, dict[Path, list[tuple[int, np.ndarray]]]]:
    """data.yaml, and for each listed image its labels as ``(class id, pixel polygon K x 2)``."""
    data = read_data_yaml(data_yaml)
    root = Path(data["path"])
    listed = (root / data["train"]).read_text().splitlines()
    assert data["val"] == data["train"]
    dataset = {}
    for line in listed:
        assert line.startswith("./")
        image = line.replace("./", str(root) + os.sep, 1).replace("/", os.sep)
        with Image.open(image) as pixels:
            width, height = pixels.size
        labels = []
        for row in Path(label_path(image)).read_text().splitlines():
            values = row.split()
            coordinates = np.array([float(v) for v in values[1:]])
            assert len(coordinates) >= 6 and len(coordinates) % 2 == 0
            assert ((coordinates >= 0) & (coordinates <= 1)).all()
            labels.append((int(values[0]), coordinates.reshape(-1, 2) * (width, height)))
        dataset[Path(image)] = labels
    return data, dataset


def fill(polygon: np.ndarray, scale: int = 8) -> np.ndarray:
    """The pixels the polygon (in pixel coordinates: pixel (r, c) spans [c, c+1) x [r, r+1))
    covers at least half of, measured on a grid ``scale`` times finer (``cv2.fillPoly`` also fills
    the pixels an edge passes through; on the finer grid that costs an eighth of a pixel)."""
    fine = np.zeros((HEIGHT * scale, WIDTH * scale), dtype=np.uint8)
    cv2.fillPoly(fine, [np.round((polygon * scale - 0.5) * 16).astype(np.int32)], 1, shift=4)
    return fine.reshape(HEIGHT, scale, WIDTH, scale).mean(axis=(1, 3)) >= 0.5


def test_yolo_export_reads_back_as_ultralytics_reads_it(project, tmp_path):
    out = tmp_path / "yolo"
    report = export_yolo(project, out)
    data, dataset = read_yolo_dataset(out / "data.yaml")
    assert data["names"] == {0: "cat", 1: "person", 2: "unused"}  # 0-based, in category id order, all of them
    images = {path.relative_to(out / "images").as_posix(): labels for path, labels in dataset.items()}
    assert sorted(images) == ["0.png", "2.png", "images_/4.png", "sub/3.png"]
    assert all(p.resolve() == project.image_root / n.replace("images_", "images") for n, p in zip(images, dataset))
    assert images["2.png"] == []  # done, nothing on it: background
    for name, labels in images.items():
        stored = stored_masks(project, name.replace("images_", "images"))
        assert [data["names"][class_id] for class_id, _ in labels] == [category for category, _ in stored]
        for (_, polygon), (_, mask) in zip(labels, stored):
            assert mask_iou(fill(polygon), mask) >= 0.9, name
    assert (report.files, report.labels, report.proposals_left_out) == (4, 5, 1)
    assert "1 box-only label written as its box's 4 corners" in report.lines()
    assert "2 labels' keypoints left out (YOLO segmentation has none)" in report.lines()


def test_yolo_labels_of_a_mask_in_parts_are_one_line_covering_every_part(project, tmp_path):
    export_yolo(project, tmp_path / "yolo")
    first = (tmp_path / "yolo" / "labels" / "0.txt").read_text().splitlines()[0]
    values = np.array([float(v) for v in first.split()[1:]]).reshape(-1, 2) * (WIDTH, HEIGHT)
    filled = fill(values)
    assert filled[10, 10] and filled[45, 65] and not filled[25, 35]  # both parts, nothing between them


def test_joined_outline_walks_each_part_once_and_each_seam_both_ways():
    square = np.array([[0, 0], [0, 2], [2, 2], [2, 0]], dtype=float)
    parts = [square, square + (10, 0), square + (20, 0)]
    joined = [tuple(p) for p in joined_outline(parts)]
    # every vertex once, plus where each seam leaves (twice: out and back) and each later part closed
    assert len(joined) == 3 * 4 + 2 + 2
    part_edges = {(tuple(p[i]), tuple(p[(i + 1) % 4])) for p in parts for i in range(4)}
    part_edges |= {(b, a) for a, b in part_edges}
    edges = [(joined[i], joined[(i + 1) % len(joined)]) for i in range(len(joined))]
    seams = [(a, b) for a, b in edges if (a, b) not in part_edges and a != b]
    assert len(seams) == 4 and all((b, a) in seams for a, b in seams)
    assert {p for p in joined} == {tuple(p) for part in parts for p in part}


def test_yolo_export_again_into_the_same_folder_keeps_its_links_and_lists_only_this_export(project, tmp_path):
    out = tmp_path / "yolo"
    export_yolo(project, out)
    report = export_yolo(project, out, only_done=True)
    assert (out / "train.txt").read_text() == "./images/2.png\n"
    assert not any("linked" in line for line in report.lines())  # its link is there from the first export
    assert (out / "images" / "0.png").is_symlink()


# -- command line -------------------------------------------------------------------------------


def test_export_writes_labelme_and_yolo_from_the_command_line(project, tmp_path, capsys):
    project.close()
    project_file = str(tmp_path / "p.annot")
    assert main.main(["export", project_file, str(tmp_path / "lm"), "--format", "labelme"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"wrote 4 labelme files with 5 labels to {tmp_path / 'lm'}"
    assert "left out 1 model proposal(s) nobody accepted" in captured.err
    assert (tmp_path / "lm" / "sub" / "3.json").is_file()

    assert main.main(["export", project_file, str(tmp_path / "y"), "--format", "yolo", "--only-done"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"wrote 1 YOLO label file with 0 labels to {tmp_path / 'y'}"
    assert read_data_yaml(tmp_path / "y" / "data.yaml")["names"][1] == "person"


def test_rle_is_refused_for_folder_exports(project, tmp_path, capsys):
    project.close()
    code = main.main(["export", str(tmp_path / "p.annot"), str(tmp_path / "y"), "--format", "yolo", "--rle"])
    assert code == main.EXIT_BAD_INPUT
    assert "--rle is for COCO files; a yolo export writes polygons" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_a_folder_export_onto_a_file_says_so(project, tmp_path, capsys):
    project.close()
    (tmp_path / "taken").write_text("")
    code = main.main(["export", str(tmp_path / "p.annot"), str(tmp_path / "taken"), "--format", "labelme"])
    assert code == main.EXIT_BAD_INPUT
    assert capsys.readouterr().err.strip().endswith("taken: is a file; a labelme export writes a folder of JSON files")
