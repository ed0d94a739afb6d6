"""``main.py propose`` under torchrun on several machines: two gloo ranks on the CPU, each a real
``main.py propose`` process started as torchrun starts it (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``), each with its own command line as on its own machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main
from annotator.store import Project, ReviewState
from model.precision import cpu_has_native_bf16
from model.precision_check import VERDICTS_FILE
from model.weights.formats import save_weights
from tests.files import write_images
from tests.model.small import tiny_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small architecture with random weights, keeping its five best boxes whatever they score."""
    model = tiny_model(box_score_thresh=0.0, box_detections_per_img=5)
    return save_weights(model, tmp_path_factory.mktemp("w") / "tiny.safetensors")


@pytest.fixture
def project_path(tmp_path: Path) -> Path:
    """Five images; the ranks take the four not done in turns: rank 0 ids 1 and 3, rank 1 ids 2
    (whose file is gone) and 5."""
    write_images(tmp_path / "images", [(64, 48)] * 4)
    with Project.create(tmp_path / "p.annot", tmp_path / "images") as project:
        for name in ("0.png", "gone.png", "1.png", "2.png", "3.png"):
            project.add_image(name, 64, 48, "h")
        project.set_review_state(4, ReviewState.DONE)
    return project.path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(command_lines: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Runs one ``main.py`` process a rank, as if each were on its own machine, and waits for all."""
    port = _free_port()
    processes = []
    try:
        for rank, arguments in enumerate(command_lines):
            environment = {
                **os.environ,
                "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(ROOT),
                "RANK": str(rank),
                "LOCAL_RANK": "0",
                "WORLD_SIZE": str(len(command_lines)),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
            }
            command = [sys.executable, str(ROOT / "main.py"), *arguments]
            processes.append(
                subprocess.Popen(
                    command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment, cwd=cwd
                )
            )
        done = []
        for process in processes:
            stdout, stderr = process.communicate(timeout=120)  # a hang fails here
            done.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
        return done
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def _propose(project: Path, weights: Path) -> list[str]:
    return ["propose", str(project), "--weights", str(weights), "--score-thresh", "0", "--device", "cpu"]


def _proposals(path: Path) -> dict[int, tuple]:
    """Each image's review state and instances: category, box, mask, keypoints, score, model version."""
    with Project.open(path) as project:
        names = {category.id: category.name for category in project.categories()}
        return {
            image.id: (
                image.state,
                [
                    (names[i.category_id], i.bbox, i.rle, i.keypoints, i.score, i.source, i.model_version)
                    for i in project.instances(image.id)
                ],
            )
            for image in project.images()
        }


def _errors(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_two_ranks_store_what_one_process_stores_and_only_rank_0_opens_the_project(
    project_path: Path, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    alone = shutil.copy(project_path, tmp_path / "alone.annot")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks run: the same sums in the same order
    try:
        assert main.main(_propose(alone, weights)) == 0
    finally:
        torch.set_num_threads(threads)
    alone_out, alone_err = capsys.readouterr()

    elsewhere = tmp_path / "machine-2"
    elsewhere.mkdir()
    not_here = elsewhere / "p.annot"  # rank 1's machine has no project file: opening it would fail
    # the ranks' own torch folder: the bfloat16 verdict is theirs to make, not the one above
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "ranks-torch"))
    rank_0, rank_1 = _run_ranks([_propose(project_path, weights), _propose(not_here, weights)], elsewhere)

    assert (rank_0.returncode, rank_1.returncode) == (0, 0), rank_0.stderr + rank_1.stderr
    assert (rank_1.stdout, rank_1.stderr) == ("", "")
    assert not not_here.exists()
    stored = _proposals(project_path)
    assert stored == _proposals(alone)
    assert [state for state, _ in stored.values()] == [ReviewState.PROPOSED, ReviewState.UNLABELED] + [
        ReviewState.PROPOSED,
        ReviewState.DONE,
        ReviewState.PROPOSED,
    ]
    assert sum(len(instances) for _, instances in stored.values()) > 0
    # rank 1 could not read image 2: its one line reaches rank 0's report
    gone = project_path.parent / "images" / "gone.png"
    assert rank_0.stderr.splitlines() == alone_err.splitlines() == [f"warning: {gone}: image file not found; skipped"]
    assert rank_0.stdout.split(" with ")[0] == alone_out.split(" with ")[0]
    assert rank_0.stdout.startswith(f"proposed {sum(len(i) for _, i in stored.values())} instances on 3 images")
    # where auto chooses bfloat16 the ranks judge it on their first image, as one process does
    verdicts = tmp_path / "ranks-torch" / "hub" / "checkpoints" / VERDICTS_FILE
    assert verdicts.is_file() == cpu_has_native_bf16()


def test_a_rank_whose_weights_are_missing_stops_the_other_in_one_line_and_what_was_stored_stays(
    project_path: Path, weights: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "machine-2" / "tiny.safetensors"  # not copied to the second machine
    rank_0, rank_1 = _run_ranks([_propose(project_path, weights), _propose(project_path, missing)], tmp_path)

    assert rank_1.returncode == main.EXIT_BAD_INPUT
    (error,) = _errors(rank_1.stderr)
    assert error.startswith(f"error: {missing}: ")
    assert rank_0.returncode == 1
    assert _errors(rank_0.stderr) == [
        "error: rank 0: stopped because another process of the run ended (its error says why)"
    ]
    assert "stopped early; everything proposed so far is saved" in rank_0.stdout
    # rank 0 stores its own image of a round before it waits for the others'
    states = [state for state, _ in _proposals(project_path).values()]
    assert states == [ReviewState.PROPOSED, ReviewState.UNLABELED, ReviewState.UNLABELED, ReviewState.DONE] + [
        ReviewState.UNLABELED
    ]


def test_when_rank_0_cannot_load_its_weights_the_other_rank_stops_in_one_line_and_nothing_is_stored(
    project_path: Path, weights: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "tiny.safetensors"
    before = _proposals(project_path)
    rank_0, rank_1 = _run_ranks(
        [_propose(project_path, missing), _propose(tmp_path / "elsewhere.annot", weights)], tmp_path
    )

    assert rank_0.returncode == main.EXIT_BAD_INPUT
    (error,) = _errors(rank_0.stderr)
    assert error.startswith(f"error: {missing}: ")
    assert (rank_1.returncode, rank_1.stdout) == (1, "")
    assert _errors(rank_1.stderr) == [
        "error: rank 1: stopped because another process of the run ended (its error says why)"
    ]
    assert _proposals(project_path) == before
