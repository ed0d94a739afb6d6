from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import main
from annotator.store import Project, ReviewState, Source
from tests.annotator.coco_writers import roboflow
from tests.files import write_images, write_json

REPO = Path(__file__).resolve().parents[1]


def test_new_creates_a_project_over_nested_folders_of_mixed_images(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    images = tmp_path / "shots"
    write_images(images, [(30, 20)])
    (images / "sub").mkdir()
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(images / "sub" / "gray.bmp")
    Image.fromarray(np.zeros((10, 12), np.uint16)).save(images / "sub" / "deep.tif")
    (images / "notes.txt").write_text("not an image")
    assert main.main(["new", str(tmp_path / "shots"), "--images", str(images)]) == 0
    assert "created" in capsys.readouterr().out
    with Project.open(tmp_path / "shots.annot") as project:
        records = {i.file_name: i for i in project.images()}
        assert set(records) == {"0.png", "sub/gray.bmp", "sub/deep.tif"}
        assert (records["0.png"].width, records["0.png"].height) == (30, 20)
        assert all(r.state == ReviewState.UNLABELED and len(r.sha256) == 64 for r in records.values())


def test_new_refuses_to_overwrite_a_project(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_images(tmp_path / "i", [(8, 8)])
    assert main.main(["new", str(tmp_path / "p"), "--images", str(tmp_path / "i")]) == 0
    assert main.main(["new", str(tmp_path / "p"), "--images", str(tmp_path / "i")]) == main.EXIT_BAD_INPUT
    assert "a project already exists here" in capsys.readouterr().err


def test_info_lists_review_states_and_instances_per_category(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_images(tmp_path / "i", [(20, 20), (20, 20)])
    with Project.create(tmp_path / "p.annot", tmp_path / "i") as project:
        a = project.add_image("0.png", 20, 20, "h")
        project.add_image("1.png", 20, 20, "h")
        project.set_review_state(a.id, ReviewState.DONE)
        cat = project.add_category("cat")
        project.add_category("person", keypoints=["nose"])
        project.add_instance(a.id, cat.id, bbox=[1, 1, 5, 5])
        project.add_instance(a.id, cat.id, bbox=[2, 2, 5, 5], score=0.4, source=Source.MODEL)
    assert main.main(["info", str(tmp_path / "p.annot")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"done\s+1", out) and re.search(r"unlabeled\s+1", out)
    assert "instances:   2, 1 of them proposals nobody accepted (export leaves those out)" in out
    assert re.search(r"cat\s+2", out) and re.search(r"person\s+0\s+\(1 keypoints\)", out)


def test_export_only_done_with_rle(tmp_path: Path) -> None:
    write_images(tmp_path / "i", [(20, 20), (20, 20)])
    with Project.create(tmp_path / "p.annot", tmp_path / "i") as project:
        a = project.add_image("0.png", 20, 20, "h")
        b = project.add_image("1.png", 20, 20, "h")
        project.set_review_state(b.id, ReviewState.DONE)
        cat = project.add_category("cat")
        mask = np.zeros((20, 20), bool)
        mask[2:9, 2:9] = True
        mask[4:6, 4:6] = False
        for image in (a, b):
            project.add_instance(image.id, cat.id, mask=mask)
    assert main.main(["export", str(tmp_path / "p.annot"), str(tmp_path / "o.json"), "--only-done", "--rle"]) == 0
    data = json.loads((tmp_path / "o.json").read_text())
    assert [i["file_name"] for i in data["images"]] == ["1.png"]
    (annotation,) = data["annotations"]
    assert isinstance(annotation["segmentation"]["counts"], str) and annotation["area"] == 45


def test_export_says_how_many_proposals_it_left_out_and_writes_them_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_images(tmp_path / "i", [(20, 20)])
    with Project.create(tmp_path / "p.annot", tmp_path / "i") as project:
        image = project.add_image("0.png", 20, 20, "h")
        cat = project.add_category("cat")
        mask = np.zeros((20, 20), bool)
        mask[2:9, 2:9] = True
        project.add_instance(image.id, cat.id, mask=mask)  # a person's label
        for score in (0.2, 0.8):
            project.add_instance(image.id, cat.id, mask=mask, score=score, source=Source.MODEL)
    project_file, out = str(tmp_path / "p.annot"), str(tmp_path / "o.json")

    assert main.main(["export", project_file, out]) == 0
    assert len(json.loads(Path(out).read_text())["annotations"]) == 1
    assert "left out 2 model proposal(s) nobody accepted (--proposals MIN_SCORE" in capsys.readouterr().err

    assert main.main(["export", project_file, out, "--proposals", "0.5"]) == 0
    assert [a.get("score") for a in json.loads(Path(out).read_text())["annotations"]] == [None, 0.8]
    assert "left out 1 model proposal(s)" in capsys.readouterr().err


def test_the_cli_skips_duplicates_unless_asked_to_keep_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = write_json(tmp_path / "images" / "source.json", roboflow(tmp_path / "images"))
    project = str(tmp_path / "p")
    assert main.main(["import", project, str(source)]) == 0
    assert main.main(["import", project, str(source)]) == 0
    captured = capsys.readouterr()
    assert "skipped 2 already in the project" in captured.out
    assert "--duplicates keep imports the skipped ones anyway" in captured.err
    assert main.main(["import", project, str(source), "--duplicates", "keep"]) == 0
    with Project.open(tmp_path / "p.annot") as opened:
        assert opened.instance_count() == 4


@pytest.mark.parametrize("command", ["new", "add", "import", "export", "info"])
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        main.main([command, "--help"])
    assert exited.value.code == 0
    assert f"main.py {command}" in capsys.readouterr().out


def test_main_script_runs_as_a_program(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "main.py", "info", str(tmp_path / "none")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == main.EXIT_BAD_INPUT
    assert done.stderr == f"error: {tmp_path / 'none.annot'}: no project file here\n"


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    (command,) = re.findall(r"^TEST_COMMAND='(.+)'$", ci, flags=re.M)
    assert command in readme
