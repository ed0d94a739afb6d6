"""labelme folders as labelme 5 and its converter (labelme2coco) treat them: where a mask lands,
``__ignore__`` regions, groups with several labels, oriented rectangles."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import main
from annotator.labelme import import_labelme
from annotator.store import Project
from tests.files import labelme_shape, write_images, write_labelme

PATCH = np.ones((3, 5), dtype=bool)  # 3 rows, 5 columns


def _one_file(tmp_path: Path, shapes: list[dict], size: tuple[int, int] = (20, 20)) -> Path:
    folder = tmp_path / "data"
    write_images(folder, [size])
    write_labelme(folder / "0.json", folder / "0.png", shapes, size)
    return folder


@pytest.mark.parametrize(
    "points, top_left, extent",
    [
        ([[2.3, 1.3], [6.3, 3.3]], (2, 1), (3, 5)),  # rounds down
        ([[2.7, 1.7], [6.7, 3.7]], (3, 2), (3, 5)),  # rounds up, where truncating is one pixel off
        ([[2.5, 1.5], [6.5, 3.5]], (2, 2), (3, 5)),  # .5 ties to even, as numpy's round in labelme
        ([[2.7, 1.7], [6.3, 3.3]], (3, 2), (3, 5)),  # fractional corners: the PNG keeps its own extent
        ([[2.0, 1.0], [4.0, 3.0]], (2, 1), (3, 3)),  # whole-pixel corners: cut to the box, both inclusive
    ],
)
def test_mask_shape_lands_on_the_pixels_labelme_paints(
    tmp_path: Path, points: list, top_left: tuple[int, int], extent: tuple[int, int]
) -> None:
    folder = _one_file(tmp_path, [labelme_shape("car", points, "mask", mask=PATCH)])
    with Project.create(tmp_path / "p.annot", folder) as project:
        import_labelme(project, folder)
        (instance,) = project.instances(1)
        expected = np.zeros((20, 20), dtype=bool)
        x, y = top_left
        expected[y : y + extent[0], x : x + extent[1]] = True
        assert np.array_equal(instance.mask, expected)


def test_mask_partly_outside_the_image_is_cut_at_its_edge(tmp_path: Path) -> None:
    folder = _one_file(tmp_path, [labelme_shape("car", [[17.6, 17.6], [21.6, 19.6]], "mask", mask=PATCH)])
    with Project.create(tmp_path / "p.annot", folder) as project:
        import_labelme(project, folder)
        (instance,) = project.instances(1)
        assert instance.mask.sum() == 2 * 2 and instance.mask[18:, 18:].all()


def test_ignore_label_is_no_category_and_is_left_out_with_a_warning(tmp_path: Path) -> None:
    folder = _one_file(
        tmp_path,
        [
            labelme_shape("dog", [[1, 1], [9, 1], [9, 9]]),
            labelme_shape("__ignore__", [[10, 10], [19, 10], [19, 19]]),
            labelme_shape("__ignore__", [[0, 10], [5, 15]], "rectangle", group_id=4),
        ],
    )
    with Project.create(tmp_path / "p.annot", folder) as project:
        report = import_labelme(project, folder)
        assert [c.name for c in project.categories()] == ["dog"]
        assert report.instances == 1 and len(project.instances(1)) == 1
        (warning,) = report.warnings
        assert warning.startswith(f"{folder / '0.json'}: left out 2 shape(s) labelled __ignore__")


def test_group_with_two_labels_becomes_one_instance_per_label_with_a_warning(tmp_path: Path) -> None:
    folder = _one_file(
        tmp_path,
        [
            labelme_shape("person", [[1, 1], [9, 1], [9, 9], [1, 9]], group_id=1),
            labelme_shape("bag", [[10, 10], [15, 10], [15, 15]], group_id=1),
            labelme_shape("nose", [[5, 3]], "point", group_id=1),
            labelme_shape("person", [[1, 12], [4, 12], [4, 15]], group_id=1),
            labelme_shape("bag", [[16, 1], [19, 1], [19, 4]], group_id=2),
        ],
    )
    with Project.create(tmp_path / "p.annot", folder) as project:
        report = import_labelme(project, folder)
        names = {c.id: c for c in project.categories()}
        by_name: dict[str, list] = {}
        for instance in project.instances(1):
            by_name.setdefault(names[instance.category_id].name, []).append(instance)
        assert {name: len(found) for name, found in by_name.items()} == {"person": 1, "bag": 2}
        (person,) = by_name["person"]
        assert len(person.polygons) == 2 and person.keypoints == (5.0, 3.0, 2.0)
        (warning,) = report.warnings
        assert warning == (
            f"{folder / '0.json'}: group 1 holds the labels 'person', 'bag': imported as 2 "
            "instances, as labelme's converter does; its points go with 'person'"
        )


def test_oriented_rectangle_is_its_four_corners(tmp_path: Path) -> None:
    corners = [[5, 1], [9, 5], [5, 9], [1, 5]]
    folder = _one_file(tmp_path, [labelme_shape("tile", corners, "oriented_rectangle")])
    with Project.create(tmp_path / "p.annot", folder) as project:
        import_labelme(project, folder)
        (instance,) = project.instances(1)
        assert instance.polygons == ((5.0, 1.0, 9.0, 5.0, 5.0, 9.0, 1.0, 5.0),)


def test_cli_prints_the_ignore_and_group_warnings_and_imports_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = _one_file(
        tmp_path,
        [
            labelme_shape("__ignore__", [[1, 1], [9, 1], [9, 9]]),
            labelme_shape("a", [[1, 1], [9, 1], [9, 9]], group_id=3),
            labelme_shape("b", [[1, 1], [9, 1], [9, 9]], group_id=3),
        ],
    )
    assert main.main(["import", str(tmp_path / "p"), str(folder)]) == 0
    out, err = capsys.readouterr()
    assert "imported 1 images, 2 categories, 2 instances" in out
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith(f"warning: {folder / '0.json'}: ") for line in lines)
    assert "left out 1 shape(s) labelled __ignore__" in lines[0] and "group 3 holds the labels 'a', 'b'" in lines[1]


@pytest.mark.skipif(not hasattr(os, "symlink") or os.name != "posix", reason="symlinks")
def test_image_that_is_a_symlink_out_of_the_folder_is_found_through_image_path(tmp_path: Path) -> None:
    """git-annex and DVC keep every image as a symlink into their store."""
    store, folder = tmp_path / "store", tmp_path / "data"
    write_images(store, [(20, 20)])
    folder.mkdir()
    (folder / "0.png").symlink_to(store / "0.png")
    write_labelme(folder / "0.json", folder / "0.png", [labelme_shape("cat", [[1, 1], [9, 1], [9, 9]])], (20, 20))
    with Project.create(tmp_path / "p.annot", folder) as project:
        assert import_labelme(project, folder).instances == 1
        assert [image.file_name for image in project.images()] == ["0.png"]
