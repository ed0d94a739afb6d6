"""Fuzzing ``main.py import`` with COCO files as labelme2coco, Datumaro, mmpose and Roboflow write
them, then mutated (types, ranges, lengths, encodings). Every file ends in exit 0 with the project
changed as the summary says and still exportable, or in exit 2 with one line ``error: FILE: ...``
and the project unchanged (its full export compared before and after); never another exit code,
a traceback, or a hang past a few seconds.

``FUZZ_EXAMPLES=N`` runs each test with N examples instead of the few that keep CI short.
"""

from __future__ import annotations

import contextlib
import copy
import faulthandler
import io
import json
import math
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pycocotools.coco import COCO

import main
from annotator.coco import export_coco
from annotator.store import Project
from tests.annotator.coco_writers import COCO_SKELETON, WRITERS

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 0))
SECONDS_PER_FILE = 5
SUMMARY = re.compile(r"^imported (\d+) images, (\d+) categories, (\d+) instances")
_BEFORE: dict[Path, tuple[str, tuple[int, int, int]]] = {}  # the base project's export, made once


def _settings(examples: int) -> settings:
    return settings(
        max_examples=EXAMPLES or examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images every writer's file can name, and a project that already holds a label."""
    folder = tmp_path_factory.mktemp("fuzz")
    for writer in WRITERS.values():
        writer(folder / "images")  # the same two 40x30 images, 0.png and 1.png
    (folder / "images" / "notes.png").write_text("not an image")
    with Project.create(folder / "base.annot", folder / "images") as project:
        image = project.add_image("0.png", 40, 30, "h")
        project.add_instance(image.id, project.add_category("existing").id, polygons=[[1, 1, 9, 1, 9, 9]])
    return folder


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raises TimeoutError in a file that takes too long; a hang inside C code, where the alarm
    cannot reach, ends the test run instead (faulthandler) rather than CI hanging."""

    def stop(signum: int, frame: object) -> None:
        raise TimeoutError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(6 * seconds, exit=True)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()


def _everything(project_path: Path, out: Path) -> tuple[str, tuple[int, int, int]]:
    """The project's full export (proposals included, RLE, without the dated info line) and its
    counts of images, categories and instances."""
    with Project.open(project_path) as project:
        export_coco(project, out, rle=True, proposals_from=-math.inf, workers=1)
        counts = (project.image_count(), len(project.categories()), project.instance_count())
    return out.read_text().split("\n", 1)[1], counts


def _run_import(workspace: Path, source_bytes: bytes, *options: str) -> tuple[int, str, str, Path, Path]:
    name = f"run{time.monotonic_ns()}"
    project = workspace / f"{name}.annot"  # beside the base project: the image root is stored relative
    shutil.copy(workspace / "base.annot", project)
    source = workspace / "images" / f"{name}.json"
    source.write_bytes(source_bytes)
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    with _time_limit(SECONDS_PER_FILE * 4), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main.main(["import", str(project), str(source), *options])
    assert time.monotonic() - started < SECONDS_PER_FILE, "import took too long"
    return code, out.getvalue(), err.getvalue(), project, source


def _check_outcome(workspace: Path, source_bytes: bytes) -> int:
    """Imports the file into a copy of the base project and checks the outcome; returns the code."""
    before, counts_before = _BEFORE.get(workspace) or _BEFORE.setdefault(
        workspace, _everything(workspace / "base.annot", workspace / "before.json")
    )
    code, out, err, project, source = _run_import(workspace, source_bytes)
    event(f"exit {code}: {err.splitlines()[0].split(': ', 3)[-1][:40] if code else 'imported'}")
    try:
        assert code in (0, main.EXIT_BAD_INPUT), (code, err)
        after, counts_after = _everything(project, project.with_suffix(".json"))
        if code == main.EXIT_BAD_INPUT:
            assert err.startswith(f"error: {source}: ") and err.count("\n") == 1 and out == "", err
            assert after == before and counts_after == counts_before
            return code
        assert all(line.startswith("warning: ") for line in err.splitlines()), err
        images, categories, instances = (int(n) for n in SUMMARY.match(out).groups())
        assert counts_after == (counts_before[0] + images, counts_before[1] + categories, counts_before[2] + instances)
        with contextlib.redirect_stdout(io.StringIO()):  # what is stored reads back in pycocotools
            exported = COCO(str(project.with_suffix(".json")))
        for annotation in exported.dataset["annotations"]:
            assert all(math.isfinite(v) for v in annotation["bbox"]) and math.isfinite(annotation["area"])
            if "segmentation" in annotation:
                assert exported.annToMask(annotation).shape == (30, 40)
        return code
    finally:
        for leftover in (project, project.with_suffix(".json"), source):
            leftover.unlink(missing_ok=True)


# -- mutating the JSON values --------------------------------------------------------------------

INTEGER = st.one_of(
    st.sampled_from([0, -1, 1, 2, 785, 2**31, 2**53 - 1, 2**53, 2**63 - 1, 2**63, -(2**63), 10**30, 10**400]),
    st.integers(-3, 3000),
)
NUMBER = st.one_of(
    INTEGER,
    st.floats(-100, 100),
    st.sampled_from([0.5, -0.0, 39.9, 1e10, -1e10, 4e7, 1e300, -1e300, math.inf, -math.inf, math.nan, 5e-324]),
)
TEXT = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "0.png",
            "1.png",
            "notes.png",
            "missing.png",
            "../0.png",
            "/etc/passwd",
            "C:\\x.png",
            "0.png\x00",
            "a\nb",
            "\ud800",
            "\u2028",
            "PPPPPP0",
            "1\u00e9",
            "0",
            "_background_",
            "person",
        ]
    ),
    st.text(max_size=6),
)
RLE = st.fixed_dictionaries(
    {
        # a fresh list each draw: a sampled list object would be shared, and a later mutation
        # could put it inside itself (a circular document) or change it for later examples
        "size": st.sampled_from([(30, 40), (40, 30), (30, 40.0), (30,)]).map(list),
        "counts": st.sampled_from(["", "0", "PPPPPPPP0", "`X1", "0k<0", "PPPPPPPPPPP0_PP0WP0goooooooO"])
        | st.text(max_size=5)
        | st.lists(INTEGER | st.sampled_from([0, 0, 1200]), max_size=6),
    }
)
HOSTILE = st.one_of(
    NUMBER,
    TEXT,
    st.booleans(),
    st.none(),
    st.lists(NUMBER, max_size=9),
    RLE,
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
# What the importer reads, each with values of about the right type but hostile ranges and lengths.
FIELDS = {
    "images": {"id": INTEGER, "file_name": TEXT, "width": INTEGER, "height": INTEGER},
    "annotations": {
        "id": INTEGER,
        "image_id": INTEGER,
        "category_id": INTEGER,
        "area": NUMBER,
        "score": NUMBER,
        "iscrowd": st.sampled_from([0, 1, 2, -1, True, False, None, 0.0, 1.0, "1"]),
        "bbox": st.lists(NUMBER, max_size=5),
        "segmentation": st.lists(st.lists(NUMBER, min_size=4, max_size=10), max_size=3) | RLE,
        "keypoints": st.lists(NUMBER | st.sampled_from([0, 1, 2]), max_size=54),
    },
    "categories": {
        "id": INTEGER,
        "name": TEXT,
        "supercategory": TEXT | st.none(),
        "color": TEXT | INTEGER,
        "keypoints": st.lists(TEXT, max_size=5),
        "skeleton": st.lists(st.lists(INTEGER, max_size=3), max_size=5),
    },
}


def _mutate_field(data: st.DataObject, document: dict) -> None:
    """A field the importer reads, of an image, annotation or category, set to a hostile value."""
    table = data.draw(st.sampled_from(sorted(FIELDS)))
    table_entries = document.get(table)
    entries = [entry for entry in table_entries if isinstance(entry, dict)] if isinstance(table_entries, list) else []
    if entries:  # (an earlier change may have taken the table or its entries away)
        entry = data.draw(st.sampled_from(entries))
        key = data.draw(st.sampled_from(sorted(FIELDS[table])))
        entry[key] = data.draw(FIELDS[table][key] if data.draw(st.integers(0, 3)) else HOSTILE)


def _mutate_anywhere(data: st.DataObject, document: dict) -> None:
    """One change anywhere in the document: a value replaced, a key deleted, an entry repeated."""
    parent, key = None, None
    node = document
    while isinstance(node, (dict, list)) and node and (parent is None or data.draw(st.integers(0, 7)) > 0):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        parent, key = node, data.draw(st.sampled_from(keys))
        node = node[key]
    if parent is None:
        return
    action = data.draw(st.sampled_from(["replace", "replace", "replace", "delete", "repeat"]))
    if action == "replace":
        parent[key] = data.draw(HOSTILE)
    elif action == "delete":
        del parent[key]
    elif isinstance(parent, list):
        parent.append(copy.deepcopy(parent[key]))
    else:
        parent[key] = [copy.deepcopy(node)] * data.draw(st.integers(0, 3))


@_settings(150)
@given(writer=st.sampled_from(sorted(WRITERS)), data=st.data())
def test_mutated_files_are_imported_or_refused_in_one_line(workspace: Path, writer: str, data: st.DataObject) -> None:
    document = WRITERS[writer](workspace / "scratch")
    for _ in range(data.draw(st.integers(1, 3))):
        data.draw(st.sampled_from([_mutate_field, _mutate_field, _mutate_anywhere]))(data, document)
    _check_outcome(workspace, json.dumps(document).encode())


# -- mutating the text and its encoding ----------------------------------------------------------


def _deep(text: str, depth: int) -> str:
    return text[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"


TEXT_CHANGES = {
    "truncate": lambda text, n: text[: n % (len(text) + 1)],
    "huge integer": lambda text, n: re.sub(r"\b\d+\b", "9" * (4290 + n % 20), text, count=1 + n % 3),
    "deep nesting": lambda text, n: _deep(text, 900 + n % 200),
    "lone surrogate": lambda text, n: text.replace('"name": "', '"name": "\\udc' + f"{n % 256:02x}", 1),
    "nul in a name": lambda text, n: text.replace('"file_name": "', '"file_name": "\\u0000', 1),
    "newline in a name": lambda text, n: text.replace('"file_name": "', '"file_name": "\\n', 1 + n % 2),
    "NaN for a number": lambda text, n: re.sub(r"(?<=[\[, ])\d+(\.\d+)?", "NaN", text, count=1 + n % 5),
    "bytes swapped in": lambda text, n: text,  # done on the encoded text, below
}
ENCODINGS = ["utf-8"] * 5 + ["utf-8-sig", "utf-16", "latin-1"]


@_settings(100)
@given(
    writer=st.sampled_from(sorted(WRITERS)),
    change=st.sampled_from(sorted(TEXT_CHANGES)),
    n=st.integers(0, 10**6),
    encoding=st.sampled_from(ENCODINGS),
    garbage=st.binary(max_size=8),
)
def test_mutated_text_and_encodings_are_imported_or_refused_in_one_line(
    workspace: Path, writer: str, change: str, n: int, encoding: str, garbage: bytes
) -> None:
    document = WRITERS[writer](workspace / "scratch")
    document["categories"][0]["name"] += "\u00e9"  # one non-ASCII letter, for the encodings to differ
    text = TEXT_CHANGES[change](json.dumps(document, ensure_ascii=False), n)
    encoded = text.encode(encoding, errors="replace")
    if change == "bytes swapped in":
        at = n % (len(encoded) + 1)
        encoded = encoded[:at] + garbage + encoded[at + len(garbage) :]
    _check_outcome(workspace, encoded)


# -- what real tools write: always imported --------------------------------------------------------


def _renumber(document: dict, from_zero: bool, offset: int) -> None:
    """Every id moved by ``offset``, after counting from 0 when ``from_zero``, references with it."""
    for table, reference in (("images", "image_id"), ("categories", "category_id"), ("annotations", None)):
        entries = document[table]
        first = min(entry["id"] for entry in entries) if from_zero else 0
        new = {entry["id"]: entry["id"] - first + offset for entry in entries}
        for entry in entries:
            entry["id"] = new[entry["id"]]
        for annotation in document["annotations"] if reference else []:
            annotation[reference] = new[annotation[reference]]


@_settings(60)
@given(
    writer=st.sampled_from(sorted(WRITERS)),
    from_zero=st.booleans(),
    id_offset=st.sampled_from([0, 784, 2**40]),
    iscrowd=st.sampled_from([0, False, None, "missing"]),
    supercategory=st.sampled_from([None, "", "x", "missing"]),
    zero_based_skeleton=st.booleans(),
    extra_edges=st.booleans(),
    unnamed_keypoints=st.booleans(),
    shift=st.floats(-20, 0),
    scores=st.booleans(),
    drop_area=st.booleans(),
)
def test_variants_real_tools_write_are_always_imported(
    workspace: Path,
    writer: str,
    from_zero: bool,
    id_offset: int,
    iscrowd: object,
    supercategory: object,
    zero_based_skeleton: bool,
    extra_edges: bool,
    unnamed_keypoints: bool,
    shift: float,
    scores: bool,
    drop_area: bool,
) -> None:
    document = WRITERS[writer](workspace / "scratch")
    _renumber(document, from_zero, id_offset)
    for annotation in document["annotations"]:
        annotation.pop("iscrowd") if iscrowd == "missing" else annotation.update(iscrowd=iscrowd)
        # the person partly outside the frame on the left: every x moves by the same shift
        for polygon in annotation["segmentation"] if isinstance(annotation["segmentation"], list) else []:
            polygon[0::2] = [x + shift for x in polygon[0::2]]
        annotation["bbox"][0] += shift
        if annotation.get("keypoints"):
            annotation["keypoints"][0::3] = [x + shift for x in annotation["keypoints"][0::3]]
        if scores:
            annotation["score"] = 0.75
        if drop_area:
            annotation.pop("area")
    for category in document["categories"]:
        category.pop("supercategory") if supercategory == "missing" else category.update(supercategory=supercategory)
        if category.get("keypoints"):
            skeleton = COCO_SKELETON if len(category["keypoints"]) == 17 else [[1, 2], [2, 3]]
            skeleton = [[a - 1, b - 1] for a, b in skeleton] if zero_based_skeleton else skeleton
            category["skeleton"] = skeleton + ([[40, 41], [1]] if extra_edges else [])
            if unnamed_keypoints:
                category["keypoints"] = []
    assert _check_outcome(workspace, json.dumps(document).encode()) == 0
