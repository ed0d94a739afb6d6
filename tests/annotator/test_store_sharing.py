"""Two programs using one project file at once: every acknowledged edit of both lands (beside an
import or a proposal run), what an import checks is what it writes on, a busy project is waited
for with a word and given up on in one line, and a project created by two programs at once is made
once."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import main
from annotator.coco import import_coco
from annotator.importing import ProjectImport, import_into, import_source
from annotator.labelme import import_labelme
from annotator.project_file import BUSY_WAIT_VARIABLE
from annotator.store import Project
from model.errors import InputError
from resources import DEMO_DIR, DEMO_MODEL
from tests.files import labelme_shape, write_images, write_json, write_labelme

ROOT = Path(__file__).resolve().parents[2]


def many_labels(folder: Path, images: int = 4, per_image: int = 60) -> Path:
    """A COCO file of ``images`` 64 x 48 images with ``per_image`` distinct small rectangles each:
    an import that holds the write lock for a while."""
    names = write_images(folder, [(64, 48)] * images)
    annotations = []
    for image_id in range(1, images + 1):
        for k in range(per_image):
            x, y = k % 50, k // 50 * 10
            polygon = [x, y, x + 5 + k % 7, y, x + 5 + k % 7, y + 6, x, y + 6]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "segmentation": [polygon],
                    "bbox": [x, y, 5 + k % 7, 6],
                    "area": (5 + k % 7) * 6,
                }
            )
    return write_json(
        folder / "labels.json",
        {
            "images": [{"id": i + 1, "file_name": n, "width": 64, "height": 48} for i, n in enumerate(names)],
            "annotations": annotations,
            "categories": [{"id": 1, "name": "thing"}],
        },
    )


def _cli(*arguments: str, **environment: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), *arguments],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **environment},
    )


@pytest.fixture
def project(tmp_path: Path) -> Project:
    write_images(tmp_path / "images", [(64, 48)])
    with Project.create(tmp_path / "p.annot", tmp_path / "images") as project:
        project.add_image("0.png", 64, 48, "h")
        project.add_category("mine")
        yield project


def test_edits_of_a_cli_import_and_of_this_program_at_once_all_land(project: Project, tmp_path: Path) -> None:
    source = many_labels(tmp_path / "images", images=4, per_image=80)
    child = _cli("import", str(project.path), str(source))
    acknowledged: list[tuple[int, int]] = []  # (instance id, its x) after add and update returned
    mask = np.zeros((48, 64), dtype=bool)
    while child.poll() is None or len(acknowledged) < 20:
        n = len(acknowledged)
        mask[:] = False
        mask[n % 48, : n % 60 + 1] = True
        instance = project.add_instance(1, 1, mask=mask)
        project.update_instance(instance.id, category_id=1, mask=mask[:, ::-1].copy())
        acknowledged.append((instance.id, 63 - n % 60))
    out, err = child.communicate()
    assert child.returncode == 0, err
    assert "imported 3 images, 1 categories, 320 instances" in out  # 0.png was in the project already
    stored = {instance.id: instance for instance in project.iter_instances()}
    for instance_id, x in acknowledged:
        assert stored[instance_id].bbox[0] == x  # the update landed, not only the add
    assert project.instance_count() == len(acknowledged) + 320
    assert project.integrity_check() == "ok"


def test_two_imports_of_one_file_into_a_new_project_at_once_make_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = many_labels(tmp_path / "images", images=4, per_image=60)
    path = tmp_path / "new.annot"
    # both found no project and set out to create one before either has made it
    both_creating = threading.Barrier(2, timeout=30)
    create = Project.create.__func__

    def create_together(cls, *arguments, **keywords):
        both_creating.wait()
        return create(cls, *arguments, **keywords)

    monkeypatch.setattr(Project, "create", classmethod(create_together))
    results: list[object] = [None, None]

    def run(k: int) -> None:
        try:
            results[k] = import_into(path, source)
        except BaseException as error:  # noqa: B036 - the test reports it
            results[k] = error

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(isinstance(result, ProjectImport) for result in results), results
    reports = sorted((r.report.instances, r.report.duplicates, r.created) for r in results)
    assert reports == [(0, 240, False), (240, 0, True)]  # the second found them all there
    with Project.open(path) as project:
        assert project.instance_count() == 240
        assert project.image_count() == 4 and len(project.categories()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "new.annot"]  # no temporary file left


def _adds_category_first(monkeypatch: pytest.MonkeyPatch, path: Path, **category: object) -> None:
    """Another program adds a category just before this one's next transaction begins."""
    begin = Project.transaction

    def transaction(self: Project):
        if self._depth == 0 and not getattr(transaction, "done", False):
            transaction.done = True
            with Project.open(path) as other:
                other.add_category(**category)
        return begin(self)

    monkeypatch.setattr(Project, "transaction", transaction)


def test_a_category_another_program_adds_while_labelme_files_are_read_is_used(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "images"
    write_labelme(folder / "0.json", folder / "0.png", [labelme_shape("newcat", [[1, 1], [9, 1], [9, 9]])], (64, 48))
    _adds_category_first(monkeypatch, project.path, name="newcat")
    report = import_labelme(project, folder)
    assert [c.name for c in project.categories()] == ["mine", "newcat"]
    assert report.categories == 0 and report.instances == 1
    assert [i.category_id for i in project.instances(1)] == [project.category_by_name("newcat").id]


def test_a_category_another_program_adds_while_a_coco_file_is_read_is_checked_against(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_json(
        tmp_path / "images" / "labels.json",
        {
            "images": [{"id": 1, "file_name": "0.png", "width": 64, "height": 48}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "keypoints": [2, 2, 2]}],
            "categories": [{"id": 1, "name": "newcat", "keypoints": ["tip"]}],
        },
    )
    _adds_category_first(monkeypatch, project.path, name="newcat", keypoints=["left", "right"])
    with pytest.raises(InputError, match=r"has keypoints \['tip'\] here but \['left', 'right'\] in the project"):
        import_coco(project, source)
    assert project.instance_count() == 0


@pytest.fixture
def locked(project: Project):
    """Another program's connection holding the project's write lock."""
    other = sqlite3.connect(project.path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    yield other
    if other.in_transaction:
        other.execute("ROLLBACK")
    other.close()


def test_a_project_locked_longer_than_the_wait_ends_in_one_line_naming_it(
    project: Project, locked: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv(BUSY_WAIT_VARIABLE, "1.5")
    source = many_labels(project.path.parent / "images", images=1, per_image=3)
    started = time.monotonic()
    assert main.main(["import", str(project.path), str(source)]) == main.EXIT_BAD_INPUT
    assert time.monotonic() - started < 6
    waiting, error = capsys.readouterr().err.splitlines()
    assert waiting == f"waiting for another program using {project.path}… (up to 1.5 s)"
    assert re.fullmatch(
        rf"error: {re.escape(str(project.path))}: busy: another program kept it locked for \d s; "
        "try again when it is done",
        error,
    )
    assert project.instance_count() == 0


def test_a_lock_released_within_the_wait_is_waited_for_and_said_so(
    project: Project, locked: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv(BUSY_WAIT_VARIABLE, "30")
    threading.Timer(2.0, lambda: locked.execute("COMMIT")).start()
    project.add_category("waited")
    assert capsys.readouterr().err == f"waiting for another program using {project.path}… (up to 30 s)\n"
    assert project.category_by_name("waited") is not None


def test_an_import_through_the_app_entry_point_waits_too(
    project: Project, locked: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BUSY_WAIT_VARIABLE, "0")
    source = many_labels(project.path.parent / "images", images=1, per_image=3)
    with pytest.raises(InputError, match="busy: another program kept it locked"):
        import_source(project, source)


def test_edits_of_this_program_during_a_cli_propose_run_all_land_beside_its_proposals(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in sorted(p.name for p in (DEMO_DIR / "images").iterdir())[:6]:
        (images / name).write_bytes((DEMO_DIR / "images" / name).read_bytes())
    path = tmp_path / "p.annot"
    assert main.main(["new", str(path), "--images", str(images)]) == 0
    child = _cli("propose", str(path), "--weights", str(DEMO_MODEL), "--device", "cpu")
    acknowledged: dict[int, int] = {}  # instance id -> its x after the update returned, on every image
    deleted: list[int] = []
    with Project.open(path) as project:
        category = project.add_category("mine").id
        ids = [image.id for image in project.images()]
        mask = np.zeros((project.image(ids[0]).height, project.image(ids[0]).width), dtype=bool)
        while child.poll() is None or len(acknowledged) < 20:
            n = len(acknowledged) + len(deleted)
            mask[:] = False
            mask[n % 40 : n % 40 + 5, : n % 60 + 1] = True
            instance = project.add_instance(ids[n % len(ids)], category, mask=mask)
            if n % 5 == 4:
                project.delete_instance(instance.id)
                deleted.append(instance.id)
                continue
            project.update_instance(instance.id, category_id=category, mask=mask[:, ::-1].copy())
            acknowledged[instance.id] = mask.shape[1] - 1 - n % 60
        out, err = child.communicate()
        assert child.returncode == 0, err
        proposed = int(re.search(r"proposed (\d+) instances on 6 images", out).group(1))
        stored = {instance.id: instance for instance in project.iter_instances()}
        for instance_id, x in acknowledged.items():
            assert stored[instance_id].bbox[0] == x  # the update landed beside the proposals
        assert not set(deleted) & set(stored)
        from_model = [i for i in stored.values() if i.source.value == "model"]
        assert len(from_model) == proposed and len(stored) == proposed + len(acknowledged)
        assert {i.model_version for i in from_model} == {next(iter(from_model)).model_version}
        assert project.integrity_check() == "ok"
