"""Image files that must be refused in one line before they can do harm: PostScript named .jpg
(Pillow would hand it to Ghostscript), a FIFO or a device named .png (reading waits or never
ends), and images too narrow for the model (they passed ``new`` and broke ``propose`` and
``train`` later)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import main
from model.images import MAX_ASPECT_RATIO, ImageReadError, header_size, probe_image, read_image
from tests.files import labelme_shape, write_images, write_labelme

ROOT = Path(__file__).resolve().parents[2]
posix_only = pytest.mark.skipif(os.name != "posix", reason="a shell-script gs, FIFOs and /dev/zero are POSIX")

# Real PostScript, as a file named .jpg would hold it: an EPS with its bounding box, and a plain
# PostScript program (Pillow's EPS plugin takes both, and renders them with Ghostscript).
EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 12\n%%EndComments\n"
    b"newpath 0 0 moveto 16 12 lineto stroke\nshowpage\n%%EOF\n"
)
PS = b"%!PS-Adobe-3.0\n%%BoundingBox: 0 0 16 12\n{ } loop\nshowpage\n"  # a loop without end


@pytest.fixture
def ghostscript_spy(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose PATH finds, first, a ``gs`` that only writes down that it was started.
    It stands in for the system's Ghostscript, which CI machines lack, and keeps a real one from
    running on the test's files where it is installed."""
    folder = tmp_path / "bin"
    folder.mkdir()
    started = tmp_path / "gs-started"
    (folder / "gs").write_text(f"#!/bin/sh\necho \"$@\" >> '{started}'\nexit 1\n")
    (folder / "gs").chmod(0o755)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"}, started


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """``main.py`` in a child process: a fresh Pillow (it remembers whether it found Ghostscript),
    and a hang fails the test instead of stopping the run."""
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )


def _one_line_error(err: str, path: Path, problem: str) -> None:
    assert err.startswith(f"error: {path}: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert problem in err


@posix_only
@pytest.mark.parametrize("content", [EPS, PS], ids=["eps", "ps"])
def test_postscript_named_jpg_is_refused_by_new_and_ghostscript_never_starts(
    tmp_path: Path, ghostscript_spy: tuple[dict[str, str], Path], content: bytes
) -> None:
    env, started = ghostscript_spy
    images = tmp_path / "images"
    write_images(images, [(16, 12)])
    (images / "photo.jpg").write_bytes(content)
    done = _cli("new", str(tmp_path / "p"), "--images", str(images), env=env)
    assert done.returncode == main.EXIT_BAD_INPUT
    _one_line_error(done.stderr, images / "photo.jpg", "not a readable image (not a JPEG, PNG, BMP, TIFF or WebP file)")
    assert not started.exists()
    assert not (tmp_path / "p.annot").exists()


@posix_only
def test_every_way_of_opening_an_image_refuses_postscript_without_ghostscript(
    tmp_path: Path, ghostscript_spy: tuple[dict[str, str], Path]
) -> None:
    env, started = ghostscript_spy
    (tmp_path / "a.jpg").write_bytes(EPS)
    (tmp_path / "b.png").write_bytes(PS)
    script = (
        "import sys\n"
        "from model.images import ImageReadError, header_size, open_image, probe_image, read_image\n"
        "def thumbnail(path):\n"
        "    with open_image(path) as image:\n"
        "        image.draft('RGB', (32, 32))\n"
        "        image.load()\n"
        "for path in sys.argv[1:]:\n"
        "    for read in (probe_image, header_size, read_image, thumbnail):\n"
        "        try:\n"
        "            read(path)\n"
        "            print('read', read.__name__, path)\n"
        "        except ImageReadError as error:\n"
        "            print(error.problem)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "a.jpg"), str(tmp_path / "b.png")],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["not a readable image (not a JPEG, PNG, BMP, TIFF or WebP file)"] * 8
    assert not started.exists()


@posix_only
@pytest.mark.parametrize("make, kind", [("fifo", "a FIFO"), ("dev_zero", "a device")])
def test_image_name_on_a_fifo_or_dev_zero_is_refused_without_reading_it(tmp_path: Path, make: str, kind: str) -> None:
    images = tmp_path / "images"
    images.mkdir()
    hostile = images / "0.png"
    if make == "fifo":
        os.mkfifo(hostile)  # opening it for reading waits for a writer that never comes
    else:
        hostile.symlink_to("/dev/zero")  # reading it never ends, and fills the memory
    write_labelme(images / "0.json", hostile, [labelme_shape("cat", [[1, 1], [9, 1], [9, 9]])], (40, 30))
    done = _cli("import", str(tmp_path / "p"), str(images), timeout=30)
    assert done.returncode == main.EXIT_BAD_INPUT
    _one_line_error(done.stderr, images / "0.json", f"{hostile}: not a regular file but {kind}")
    for read in (probe_image, header_size, read_image):
        with pytest.raises(ImageReadError, match=f"not a regular file but {kind}"):
            read(hostile)


def _narrow(folder: Path, width: int, height: int, name: str = "strip.png") -> Path:
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(folder / name)
    return folder / name


def test_image_too_narrow_for_the_model_is_refused_from_its_header(tmp_path: Path) -> None:
    strip = _narrow(tmp_path, 5000, 1)
    for read in (probe_image, header_size, read_image):
        with pytest.raises(ImageReadError) as raised:
            read(strip)
        assert str(raised.value) == (
            f"{strip}: image is 5000x1 pixels, its sides in a ratio over {MAX_ASPECT_RATIO}:1, too narrow for the model"
        )
    tall = _narrow(tmp_path, 2, 2 * MAX_ASPECT_RATIO, "tall.png")
    assert header_size(tall) == (2, 200) and read_image(tall).shape == (200, 2, 3)  # the ratio itself is fine


def test_new_refuses_an_image_too_narrow_for_the_model_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    images = tmp_path / "images"
    write_images(images, [(64, 48)])
    strip = _narrow(images, 5000, 1)
    assert main.main(["new", str(tmp_path / "p"), "--images", str(images)]) == main.EXIT_BAD_INPUT
    _one_line_error(capsys.readouterr().err, strip, "image is 5000x1 pixels")
    assert not (tmp_path / "p.annot").exists()


def test_train_refuses_an_image_too_narrow_for_the_model_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    images = tmp_path / "images"
    write_images(images, [(64, 48), (64, 48)])
    strip = _narrow(images, 1, 5000)
    entries = [("0.png", 64, 48), ("strip.png", 1, 5000), ("1.png", 64, 48)]
    coco = {
        "images": [{"id": i + 1, "file_name": n, "width": w, "height": h} for i, (n, w, h) in enumerate(entries)],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [4, 4, 20, 20],
                "iscrowd": 0,
                "area": 400,
                "segmentation": [[4, 4, 24, 4, 24, 24, 4, 24]],
            }
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "train.json").write_text(json.dumps(coco))
    out = tmp_path / "run"
    status = main.main(
        [
            "train",
            str(tmp_path / "train.json"),
            "--images",
            str(images),
            "--out",
            str(out),
            "--weights",
            "none",
            "--iters",
            "1",
            "--workers",
            "0",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert status == main.EXIT_BAD_INPUT
    assert "Traceback" not in err
    (error,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert error == f"error: {strip}: image is 1x5000 pixels, its sides in a ratio over 100:1, too narrow for the model"
    assert not out.exists()
