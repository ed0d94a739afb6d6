"""Importing with rollback (annotator.importing), the use case ``main.py import`` and the app share:
the source picks the importer, and a failed import leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from annotator.importing import import_into, import_source
from annotator.store import Project
from model.errors import InputError
from tests.annotator.coco_writers import SIZE, roboflow
from tests.files import write_json


def _labelme_folder(folder: Path) -> Path:
    """One labelme file (as labelme 5 saves it) over the first image of a Roboflow folder."""
    roboflow(folder)
    (folder / "0.json").write_text(
        json.dumps(
            {
                "version": "5.5.0",
                "flags": {},
                "imagePath": "0.png",
                "imageData": None,
                "imageHeight": SIZE[1],
                "imageWidth": SIZE[0],
                "shapes": [
                    {
                        "label": "dog",
                        "points": [[2, 2], [12, 2], [12, 12]],
                        "group_id": None,
                        "description": "",
                        "shape_type": "polygon",
                        "flags": {},
                        "mask": None,
                    }
                ],
            }
        )
    )
    return folder


def test_the_source_picks_the_importer(tmp_path: Path) -> None:
    folder = _labelme_folder(tmp_path / "images")
    source = write_json(tmp_path / "coco.json", roboflow(tmp_path / "images"))
    with Project.create(tmp_path / "p.annot", folder) as project:
        assert import_source(project, folder).instances == 1  # a folder: labelme
        assert import_source(project, source).instances == 2  # a file: COCO
        with pytest.raises(InputError, match="no such file or folder"):
            import_source(project, tmp_path / "missing.json")


def test_a_failed_import_into_a_new_project_leaves_no_file_behind(tmp_path: Path) -> None:
    data = roboflow(tmp_path / "images")
    data["annotations"][1]["bbox"] = [1, 1, 1e300, 1]
    source = write_json(tmp_path / "images" / "bad.json", data)
    with pytest.raises(InputError, match="reaches more than one image size outside"):
        import_into(tmp_path / "new.annot", source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]  # no -wal or -shm either


def test_a_failed_import_into_a_project_changes_nothing(tmp_path: Path) -> None:
    data = roboflow(tmp_path / "images")
    source = write_json(tmp_path / "images" / "good.json", data)
    done = import_into(tmp_path / "p.annot", source)
    assert done.created and done.report.instances == 2
    with Project.open(done.path) as project:
        before = list(project._db.iterdump())
    data["annotations"].append(dict(data["annotations"][1], id=7, score="high"))
    with pytest.raises(InputError, match="'score' must be a finite number"):
        import_into(done.path, write_json(tmp_path / "images" / "bad.json", data))
    with Project.open(done.path) as project:
        assert list(project._db.iterdump()) == before


def test_another_image_folder_than_the_project_s_is_refused(tmp_path: Path) -> None:
    source = write_json(tmp_path / "images" / "good.json", roboflow(tmp_path / "images"))
    import_into(tmp_path / "p.annot", source)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(InputError, match="the project's images are in"):
        import_into(tmp_path / "p.annot", source, tmp_path / "elsewhere")
    with pytest.raises(InputError, match="not a folder of images"):
        import_into(tmp_path / "p.annot", source, tmp_path / "nothing")
