"""Fuzzing ``main.py import`` with labelme folders: valid labelme 5 files, mutated (types, ranges,
lengths, encodings). Whatever the file holds, the command ends in one of two ways:

- exit 0, and the export holds exactly the instances the summary line says were imported;
- exit 2 with one line ``error: FILE: ...`` on stderr, and the export is byte for byte as before;

never another exit code, a traceback or a hang. ``FUZZ_EXAMPLES=N`` runs N examples instead of the
few hundred CI runs, with a fresh random seed.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

import main
from tests.files import labelme_shape

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0"))
SECONDS_PER_FILE = 10
WIDTH, HEIGHT = 40, 30


def valid_file() -> dict[str, Any]:
    """A labelme 5 file as LabelFile.save writes it, with every kind of shape."""
    blob = np.zeros((6, 8), dtype=bool)
    blob[1:5, 2:7] = True
    return {
        "version": "5.5.0",
        "flags": {},
        "imagePath": "../0.png",
        "imageData": None,
        "imageHeight": HEIGHT,
        "imageWidth": WIDTH,
        "shapes": [
            labelme_shape("dog", [[2, 2], [12, 2], [12, 12], [2, 12]], "polygon"),
            labelme_shape("box", [[14, 2], [20, 8]], "rectangle"),
            labelme_shape("ball", [[30, 20], [34, 20]], "circle"),
            labelme_shape("blob", [[24.5, 20.5], [31.5, 25.5]], "mask", mask=blob),
            labelme_shape("person", [[2, 14], [12, 14], [12, 28], [2, 28]], "polygon", group_id=1),
            labelme_shape("nose", [[7, 16]], "point", group_id=1),
            labelme_shape("tile", [[20, 12], [24, 16], [20, 20], [16, 16]], "oriented_rectangle"),
            labelme_shape("fence", [[0, 29], [39, 29]], "line"),
        ],
    }


SHAPE_KEYS = ("label", "points", "group_id", "shape_type", "mask", "flags", "description")
TOP_KEYS = ("imagePath", "imageWidth", "imageHeight", "shapes", "version", "imageData", "flags")

odd_numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 0.5, 1e10, -1e10, 4e7, 1e308, -0.0, 2**63, 2**63 - 1, 2**64, 20000]),
)
odd_text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            " ",
            "__ignore__",
            "dog",
            "nose",
            "a\nb",
            "a\x00b",
            "\u2028",
            "0.png",
            "../0.png",
            "..\\0.png",
            "/etc/passwd",
            "C:\\0.png",
            "../../0.png",
            "missing.png",
            "x.json",
            "\ud800",
            "polygon",
            "rectangle",
            "circle",
            "mask",
            "point",
            "line",
            "linestrip",
            "points",
            "oriented_rectangle",
            "ellipse",
            "aGVsbG8=",
            "!!notbase64",
        ]
    ),
)


def _mask_values() -> st.SearchStrategy[str]:
    """A mask field: another PNG (empty, huge declared size, other modes), not PNG, not base64."""

    def png_of(size: tuple[int, int], mode: str) -> str:
        buffer = io.BytesIO()
        Image.new(mode, size).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def jpeg() -> str:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 6)).save(buffer, format="JPEG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    sizes = st.tuples(st.sampled_from([1, 3, 8, 40, 41, 20000]), st.sampled_from([1, 6, 30, 31, 20000]))
    return st.one_of(
        st.builds(png_of, sizes, st.sampled_from(["1", "L", "RGB", "RGBA", "I;16", "P"])),
        st.builds(jpeg),
        st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode("ascii")),
    )


# characters that break a line or a path: control characters, separators, an escape, NUL
breaking = st.sampled_from(["\n", "\r", "\x00", "\t", "\x1b", "\x85", "\u2028", "\u2029", "\\", "/", ".."])
image_paths = st.one_of(
    odd_text,
    st.builds(lambda at, char: "../0.png"[:at] + char + "../0.png"[at:], st.integers(0, 8), breaking),
    st.sampled_from(
        [
            "../0.png",
            "..\\0.png",
            "./../0.png",
            "../images/../0.png",
            "../0.PNG",
            "../0.png/",
            "../labels/../0.png",
            "../../images/0.png",
        ]
    ),
)
labels = st.one_of(odd_text, st.builds(lambda char, at: "dog"[:at] + char + "dog"[at:], breaking, st.integers(0, 3)))

odd_values = st.recursive(
    st.one_of(st.none(), st.booleans(), odd_numbers, odd_text),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(SHAPE_KEYS), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def mutated_file(draw: st.DrawFn) -> bytes:
    """The bytes of one labelme file: a valid one changed in one to four places, then encoded."""
    data = valid_file()
    for _ in range(draw(st.integers(1, 4))):
        shapes = data.get("shapes") if isinstance(data.get("shapes"), list) else None
        kind = draw(
            st.sampled_from(
                [
                    "top",
                    "path",
                    "shape",
                    "label",
                    "point",
                    "point",
                    "point",
                    "mask",
                    "drop",
                    "copy",
                    "length",
                    "group",
                    "group",
                ]
            )
        )
        if kind == "path":
            data["imagePath"] = draw(image_paths)
            continue
        if kind == "top" or not shapes:
            key = draw(st.sampled_from(TOP_KEYS))
            data[key] = draw(st.one_of(odd_values, odd_numbers, odd_text))
            continue
        index = draw(st.integers(0, len(shapes) - 1))
        shape = shapes[index]
        if not isinstance(shape, dict):
            continue
        if kind == "shape":
            shape[draw(st.sampled_from(SHAPE_KEYS))] = draw(odd_values)
        elif kind == "label":
            shape["label"] = draw(labels)
        elif kind == "point" and isinstance(shape.get("points"), list) and shape["points"]:
            point = draw(st.integers(0, len(shape["points"]) - 1))
            if isinstance(shape["points"][point], list) and shape["points"][point]:
                shape["points"][point][draw(st.integers(0, len(shape["points"][point]) - 1))] = draw(odd_numbers)
        elif kind == "mask":
            shape["mask"] = draw(_mask_values())
        elif kind == "drop":
            shape.pop(draw(st.sampled_from(SHAPE_KEYS)), None)
        elif kind == "copy":
            shapes.insert(draw(st.integers(0, len(shapes))), json.loads(json.dumps(shape)))
        elif kind == "length" and isinstance(shape.get("points"), list):
            count = draw(st.integers(0, 70))
            shape["points"] = (shape["points"] * count)[:count] if shape["points"] else [[1, 1]] * count
        else:  # group: labels and shapes of one group meet
            shape["group_id"] = draw(st.sampled_from([1, 2, None, 1.0, 10**30]))
            shape["label"] = draw(st.sampled_from(["dog", "person", "nose", "__ignore__", shape.get("label")]))
    text = json.dumps(data, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 2])))
    encoding = draw(st.sampled_from(["utf-8"] * 12 + ["utf-8-sig", "utf-16", "latin-1", "cut", "deep", "huge-int"]))
    if encoding == "deep":
        return ('{"shapes": ' + "[" * 100_000 + "]" * 100_000 + "}").encode()
    if encoding == "huge-int":
        text = text.replace(f'"imageWidth": {WIDTH}', '"imageWidth": ' + "9" * 4400, 1)
    # a lone surrogate (ensure_ascii=False) goes out as the three bytes UTF-8 forbids
    raw = (
        text.encode("latin-1", "replace")
        if encoding == "latin-1"
        else text.encode("utf-8" if encoding in ("cut", "huge-int") else encoding, "surrogatepass")
    )
    return raw[: draw(st.integers(0, len(raw)))] if encoding == "cut" else raw


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Fails a run that takes longer than ``seconds`` (a hang), where there is a timer signal."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def hang(signum: int, frame: Any) -> None:
        raise TimeoutError(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _deadline(SECONDS_PER_FILE):
        code = main.main(list(args))
    return code, out.getvalue(), err.getvalue()


def _export(project: Path, out: Path) -> str:
    """The project's export (pixel-exact RLE), without the line that holds the time of export."""
    code, _, err = _run("export", str(project), str(out), "--rle")
    assert code == 0, err
    return out.read_text().split("\n", 1)[1]


@pytest.fixture(scope="module")
def workspace() -> Iterator[Path]:
    """An image, a project made over it with ``new`` (copied fresh for each example) and its export."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "images" / "labels").mkdir(parents=True)
        pixels = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / "0.png")
        assert _run("new", str(root / "template.annot"), "--images", str(root / "images"))[0] == 0
        yield root


@pytest.mark.skipif(os.name != "posix", reason="the hang check needs SIGALRM")
@settings(
    max_examples=EXAMPLES or 250,
    deadline=None,
    derandomize=not EXAMPLES,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(content=mutated_file())
def test_import_of_any_labelme_file_imports_or_refuses_in_one_line_leaving_the_project_as_it_was(
    workspace: Path, content: bytes
) -> None:
    project, labels = workspace / "p.annot", workspace / "images" / "labels"
    shutil.copyfile(workspace / "template.annot", project)
    (labels / "0.json").write_bytes(content)
    before = _export(project, workspace / "before.json")

    code, out, err = _run("import", str(project), str(labels))

    assert "Traceback" not in err
    event(f"exit {code}" + (f": {err.split(': ', 2)[-1][:30]}" if code else ""))  # --hypothesis-show-statistics
    after = _export(project, workspace / "after.json")
    if code == 0:
        imported = re.search(r"imported (\d+) images, (\d+) categories, (\d+) instances", out)
        assert imported, out
        exported = json.loads(f'{{"info":{{}},\n{after}')  # the line left out held only "info"
        assert len(exported["annotations"]) == int(imported[3])
        assert all(line.startswith("warning: ") for line in err.splitlines())
    else:
        assert code == main.EXIT_BAD_INPUT, err
        assert err.startswith(f"error: {labels / '0.json'}: ") and err.count("\n") == 1, err
        assert after == before
