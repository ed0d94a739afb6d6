"""Images that came into a project's folder after it was made (or left it): noticed by name when
the project opens, added with ``main.py add`` / File > Add images, each decoded once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import main
from annotator.image_folder import add_images, create_project, folder_changes, scan_images
from annotator.store import Project, ReviewState
from tests.files import write_images


@pytest.fixture
def project(tmp_path: Path) -> Project:
    folder = tmp_path / "shots"
    write_images(folder, [(20, 10), (20, 10)])
    project = create_project(tmp_path / "shots.annot", scan_images(folder))
    yield project
    project.close()


def test_new_and_missing_images_are_noticed_by_name(project: Project) -> None:
    root = project.image_root
    write_images(root / "later", [(8, 8)])
    (root / "0.png").unlink()
    (root / "notes.txt").write_text("not an image")
    changes = folder_changes(root, {image.file_name for image in project.images()})
    assert changes.new == [root / "later" / "0.png"] and changes.missing == ["0.png"]
    assert changes.message() == ("1 new image in the folder (File > Add images… adds them); 1 image missing (0.png)")
    assert folder_changes(root / "gone", set()).message() == ""


def test_adding_takes_new_images_once_and_says_why_it_left_others_out(project: Project, tmp_path: Path) -> None:
    root = project.image_root
    write_images(root / "later", [(8, 6), (9, 7)])
    (root / "later" / "broken.png").write_bytes(b"\x89PNG not really")
    outside = tmp_path / "elsewhere"
    write_images(outside, [(5, 5)])
    report = add_images(project, [root / "later", root / "0.png", outside / "0.png", root / "notes.txt"])
    assert (report.added, report.known) == (2, 1)
    assert len(report.problems) == 3
    assert any("broken.png" in p for p in report.problems)
    assert any("not under the project's image folder" in p for p in report.problems)
    assert any("notes.txt" in p and "not an image file" in p for p in report.problems)
    added = project.image_by_file_name("later/1.png")
    assert (added.width, added.height, added.state) == (9, 7, ReviewState.UNLABELED) and len(added.sha256) == 64
    assert add_images(project, [root / "later"]).added == 0  # a second time: all known


def test_main_add_adds_the_images_and_prints_what_it_left_out(
    project: Project, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = project.image_root
    shutil.copy(root / "0.png", root / "copy.png")
    (root / "bad.jpg").write_bytes(b"nope")
    assert main.main(["add", str(project.path), str(root / "copy.png"), str(root / "bad.jpg")]) == 0
    printed = capsys.readouterr()
    assert "added 1 image to" in printed.out and "bad.jpg" in printed.err
    assert project.image_count() == 3
