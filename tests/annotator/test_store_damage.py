"""A damaged project file is reported in one line naming the file (and the image or instance where
that can be known), never a traceback: an export leaves the damaged instances out and names them,
or refuses and writes nothing; ``main.py check`` runs SQLite's integrity check and reads every
value back; and nothing but creating a project makes a project file (a 0-byte ``.annot`` stays
0 bytes)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

import main
from annotator import masks
from annotator.store import Project


def _mask(offset: int) -> np.ndarray:
    mask = np.zeros((30, 40), dtype=bool)
    mask[5:15, 5 + offset : 20] = True
    mask[20:25, 30:35] = True
    return mask


@pytest.fixture
def project_file(tmp_path: Path) -> Path:
    """A closed project (everything in the file itself): 3 images, each with a traced mask and a
    drawn outline."""
    path = tmp_path / "p.annot"
    with Project.create(path, tmp_path) as project:
        category = project.add_category("thing")
        for index in range(3):
            image = project.add_image(f"{index}.png", 40, 30, "h")
            project.add_instance(image.id, category.id, mask=_mask(index))
            project.add_instance(image.id, category.id, polygons=[[1, 1, 9 + index, 1, 9, 9]])
    return path


def _flip(path: Path, offset: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def _run(capsys: pytest.CaptureFixture, *arguments: str) -> tuple[int, str, str]:
    status = main.main(list(arguments))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_a_zero_byte_project_file_is_refused_and_stays_empty(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty.annot"
    empty.touch()
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    for arguments in (["info", str(empty)], ["export", str(empty), str(tmp_path / "out.json")], ["check", str(empty)]):
        status, _, err = _run(capsys, *arguments)
        assert status == 2
        assert err == f"error: {empty}: an empty file, not a project file (only 'main.py new' makes one)\n"
    status, _, err = _run(capsys, "import", str(empty), str(labels))
    assert status == 2 and "an empty file" in err
    assert empty.stat().st_size == 0
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize(
    "offset, bit, message",
    [
        (60, 7, "damaged: its header gives schema version -"),  # the schema version turned negative
        (16, 3, "damaged: file is not a database"),  # the page size
        (21, 0, "damaged: file is not a database"),  # the payload fraction SQLite insists on
    ],
)
def test_a_damaged_header_byte_is_one_line(
    project_file: Path, offset: int, bit: int, message: str, capsys: pytest.CaptureFixture
) -> None:
    _flip(project_file, offset, bit)
    for command in ("info", "check"):
        status, _, err = _run(capsys, command, str(project_file))
        assert status == 2 and err.startswith(f"error: {project_file}: {message}") and err.count("\n") == 1


def _offset_of(path: Path, text: str) -> int:
    data = path.read_bytes()
    assert data.count(text.encode()) == 1
    return data.index(text.encode())


def test_an_export_leaves_out_an_instance_whose_mask_is_damaged_and_names_it(
    project_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    counts = masks.encode(_mask(1))["counts"]
    _flip(project_file, _offset_of(project_file, counts) + 2, 7)  # no longer UTF-8 text
    out = tmp_path / "out.json"
    for rle in ([], ["--rle"]):
        status, _, err = _run(capsys, "export", str(project_file), str(out), *rle)
        assert status == 0
        assert f"warning: {project_file}: left out damaged instance 3 (on image 2): its stored text is not UTF-8" in err
        exported = json.loads(out.read_text())
        assert sorted(a["id"] for a in exported["annotations"]) == [1, 2, 4, 5, 6]
    status, out_text, err = _run(capsys, "check", str(project_file))
    assert status == 1
    assert f"{project_file}: instance 3 (on image 2): its stored text is not UTF-8" in err


def test_a_mask_damaged_within_its_alphabet_is_caught_before_it_is_decoded(
    project_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    counts = masks.encode(_mask(2))["counts"]
    _flip(project_file, _offset_of(project_file, counts) + 1, 0)  # another run length: runs no longer cover
    status, _, err = _run(capsys, "export", str(project_file), str(tmp_path / "out.json"))
    assert status == 0
    assert "left out damaged instance 5 (on image 3): its mask (RLE) is damaged: RLE runs cover" in err
    status, _, err = _run(capsys, "check", str(project_file))
    assert status == 1 and "instance 5 (on image 3): its mask (RLE) is damaged" in err


def test_an_outline_that_is_no_longer_json_is_left_out(
    project_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _flip(project_file, _offset_of(project_file, "[[1.0,1.0,10.0,1.0") + 5, 6)  # '.' -> 'n'
    status, _, err = _run(capsys, "export", str(project_file), str(tmp_path / "out.json"))
    assert status == 0 and "left out damaged instance 4 (on image 2): its outline is not a list of polygons" in err
    assert len(json.loads((tmp_path / "out.json").read_text())["annotations"]) == 5


def test_an_export_of_a_damaged_image_row_refuses_and_writes_nothing(
    project_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = project_file.read_bytes()
    for offset in [i for i in range(len(data)) if data.startswith(b"1.png", i)]:  # the row and its index entry
        _flip(project_file, offset, 7)
    out = tmp_path / "out.json"
    out.write_text('{"previous": true}')
    status, _, err = _run(capsys, "export", str(project_file), str(out))
    assert status == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {project_file}: damaged: stored text is not UTF-8")
    assert out.read_text() == '{"previous": true}'
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.json")] == []
    status, _, err = _run(capsys, "check", str(project_file))
    assert status == 1 and "image 2: its stored values cannot be read" in err


def test_check_says_a_sound_project_is_sound(project_file: Path, capsys: pytest.CaptureFixture) -> None:
    status, out, err = _run(capsys, "check", str(project_file))
    assert (status, err) == (0, "")
    assert out == (
        f"{project_file}: ok: integrity_check ok; every value of 3 images, 1 categories, 6 instances, 0 models "
        "reads back\n"
    )


def test_single_flipped_bits_anywhere_never_end_in_a_traceback_or_a_half_written_export(
    project_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pristine = project_file.read_bytes()
    out = tmp_path / "out.json"
    rng = random.Random(17)
    for offset in rng.sample(range(len(pristine)), 60):
        bit = rng.randrange(8)
        project_file.write_bytes(pristine)
        _flip(project_file, offset, bit)
        for arguments in (["info"], ["check"], ["export", str(out)], ["export", str(out), "--rle"]):
            out.unlink(missing_ok=True)
            status, _, err = _run(capsys, arguments[0], str(project_file), *arguments[1:])
            where = f"bit {bit} of byte {offset}, {arguments[0]}: {err}"
            assert status in (0, 1, 2) and "Traceback" not in err, where
            assert all(line.startswith(("error: ", "warning: ", str(project_file))) for line in err.splitlines()), where
            if arguments[0] == "export":
                assert (status == 0) == out.exists(), where
                if status == 0:
                    json.loads(out.read_text())
