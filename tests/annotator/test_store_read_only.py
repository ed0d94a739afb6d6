"""A project that cannot be written (a 0444 file, a read-only folder, with or without a ``-wal``
holding changes) is read: ``info`` and ``export`` work, and a command that would change it says
"read-only: …" in one line. The commands run as a user the permissions apply to (root, who runs
these tests in CI, may write any file: there they run as ``nobody``)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from annotator.store import Project
from tests.files import reachable_by_other_users, write_images, write_json

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534


def run_as_reader(*arguments: str) -> subprocess.CompletedProcess:
    """``main.py ARGUMENTS`` as a user without root's rights (setpriv drops them only as it starts
    the program: the interpreter may lie in root's home)."""
    command = [sys.executable, str(ROOT / "main.py"), *arguments]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: every file is writable")
        command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]
    with reachable_by_other_users():
        return subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120
        )


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder the reader can reach (pytest's tmp_path is root's own)."""
    folder = Path(tempfile.mkdtemp(prefix="read-only-"))
    folder.chmod(0o755)
    yield folder
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
    shutil.rmtree(folder)


def _project(folder: Path, name: str = "p.annot") -> Project:
    write_images(folder / "images", [(40, 30), (40, 30)])
    project = Project.create(folder / name, folder / "images")
    category = project.add_category("thing")
    for index in range(2):
        image = project.add_image(f"{index}.png", 40, 30, "h")
        mask = np.zeros((30, 40), dtype=bool)
        mask[5:15, 5 + index : 20] = True
        project.add_instance(image.id, category.id, mask=mask)
    return project


def _writable_folder(path: Path) -> Path:
    path.mkdir()
    path.chmod(0o777)
    return path


def _lock(*paths: Path) -> None:
    for path in paths:
        path.chmod(
            stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH | (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH) * path.is_dir()
        )


def _reads_and_refuses_writes(path: Path, out: Path) -> None:
    info = run_as_reader("info", str(path))
    assert info.returncode == 0, info.stderr
    assert "thing" in info.stdout
    exported = run_as_reader("export", str(path), str(out / "out.json"))
    assert exported.returncode == 0, exported.stderr
    assert len(json.loads((out / "out.json").read_text())["annotations"]) == 2
    check = run_as_reader("check", str(path))
    assert check.returncode == 0, check.stderr
    before = path.read_bytes()
    labels = {
        "images": [{"id": 1, "file_name": "0.png", "width": 40, "height": 30}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
        "categories": [{"id": 1, "name": "new"}],
    }
    source = write_json(out / "labels.json", labels)
    imported = run_as_reader("import", str(path), str(source))
    assert imported.returncode == 2
    assert imported.stderr.startswith(f"error: {path}: read-only: ") and imported.stderr.count("\n") == 1
    assert path.read_bytes() == before


def test_a_0444_project_in_a_writable_folder_is_read_and_refuses_changes(shared: Path) -> None:
    folder = _writable_folder(shared / "project")
    _project(folder).close()
    _lock(folder / "p.annot")
    _reads_and_refuses_writes(folder / "p.annot", _writable_folder(shared / "out"))


def test_a_project_in_a_read_only_folder_is_read_and_refuses_changes(shared: Path) -> None:
    folder = shared / "project"
    _project(folder).close()
    assert not (folder / "p.annot-wal").exists()
    _lock(folder / "p.annot", folder)
    _reads_and_refuses_writes(folder / "p.annot", _writable_folder(shared / "out"))
    assert sorted(p.name for p in folder.iterdir()) == ["images", "p.annot"]  # no -shm could be made


def _copy_while_open(project: Project, folder: Path, suffixes: tuple[str, ...]) -> Path:
    """The project file as another program left it, its last changes still in the -wal."""
    folder.mkdir()
    for suffix in suffixes:
        shutil.copy(project.path.with_name(project.path.name + suffix), folder / f"p.annot{suffix}")
    return folder / "p.annot"


def test_a_read_only_copy_with_changes_in_its_wal_shows_them_or_says_why_not(shared: Path) -> None:
    project = _project(shared / "source")
    project.add_category("only in the wal")
    with_index = _copy_while_open(project, shared / "with-shm", ("", "-wal", "-shm"))
    without_index = _copy_while_open(project, shared / "without-shm", ("", "-wal"))
    project.close()
    _lock(*with_index.parent.iterdir(), with_index.parent, *without_index.parent.iterdir(), without_index.parent)

    info = run_as_reader("info", str(with_index))
    assert info.returncode == 0, info.stderr
    assert "only in the wal" in info.stdout

    refused = run_as_reader("info", str(without_index))
    assert refused.returncode == 2
    assert refused.stderr == (
        f"error: {without_index}: read-only: its folder cannot be written and its -wal file holds changes not "
        "yet in the file; open it once where it can be written\n"
    )
