"""The fine-tuning plumbing: export of the done images, a child process printing JSON events,
live progress, loss plot and AP, cancel ending the whole process tree, and the new model offered."""

from __future__ import annotations

import os
import re
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QMessageBox

from annotator.gui.finetune_dialog import FineTuneDialog
from annotator.learning import parse_event
from annotator.store import ReviewState
from tests.gui.driving import answer_dialogs

FAKE_TRAIN = textwrap.dedent("""
    import json, subprocess, sys, time
    from pathlib import Path
    coco, out, slow, worse = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "slow", sys.argv[3] == "worse"
    held_out = 1 if sys.argv[3] == "few" else 3
    def event(**fields):
        print(json.dumps(fields), flush=True)
    data = json.load(open(coco))
    print("loading", len(data["images"]), "images", flush=True)
    event(event="eval", stage="before", iteration=0, images=held_out, segm={"AP": 0.105}, bbox={"AP": 0.12})
    if slow:  # a grandchild, as data-loader workers are; cancel must end it too
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        (out / "grandchild.pid").write_text(str(child.pid))
    for i in range(1, 6):
        event(event="progress", epoch=1, iteration=i, total=5, loss=2.0 / i)
        time.sleep(2 if slow else 0.02)
    after = {"AP": 0.05 if worse else 0.3125}
    event(event="eval", stage="after", iteration=5, images=held_out, segm=after, bbox={"AP": 0.33})
    (out / "model_final.safetensors").write_bytes(b"weights")
    event(event="done", path=str(out / "model_final.safetensors"))
""")


def _dialog(qtbot, project, tmp_path: Path, mode: str) -> FineTuneDialog:
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)

    def command(request, coco_file, image_root):
        return [sys.executable, str(script), str(coco_file), str(request.run_dir), mode]

    dialog = FineTuneDialog(project, base_weights=["base.pth"], command_factory=command)
    qtbot.addWidget(dialog)
    return dialog


def _done_project(path: Path):
    from annotator.store import Project

    project = Project.open(path)
    mask = np.zeros((90, 120), dtype=bool)
    mask[10:30, 10:40] = True
    project.add_instance(1, 1, mask=mask)
    project.set_review_state(1, ReviewState.DONE)
    return project


def test_train_command_is_a_command_line_that_main_py_train_accepts(tmp_path):
    from annotator.learning import TrainingRequest, train_command
    from main import build_parser
    from model.cli import cmd_train

    request = TrainingRequest("base.pth", 3, 0.2, "cpu", tmp_path / "run")
    command = train_command(request, tmp_path / "train.json", tmp_path / "images")
    assert Path(command[2]).name == "main.py"
    args = build_parser().parse_args(command[3:])
    assert args.handler is cmd_train
    assert (args.weights, args.epochs, args.val_fraction, args.device) == ("base.pth", 3, 0.2, "cpu")
    assert Path(args.out) == tmp_path / "run" and Path(args.images) == tmp_path / "images"
    steps = TrainingRequest("base.pth", 3, 0.0, "cpu", tmp_path / "run", iterations=540, batch_size=4)
    args = build_parser().parse_args(train_command(steps, tmp_path / "train.json", tmp_path / "images")[3:])
    assert (args.iters, args.batch_size) == (540, 4)  # steps, not epochs: a learning round's length


def test_parse_event_takes_json_lines_with_an_event_field_only():
    assert parse_event('{"event": "progress", "loss": 1.5}\n') == {"event": "progress", "loss": 1.5}
    assert parse_event("epoch 1 loss 1.5") is None
    assert parse_event('{"loss": 1.5}') is None
    assert parse_event('{"event": ') is None


def test_training_events_drive_progress_plot_and_ap_and_offer_the_model(qtbot, blob_project, tmp_path):
    with _done_project(blob_project) as project:
        dialog = _dialog(qtbot, project, tmp_path, "fast")
        assert dialog.epochs.value() == 120  # one done image: as long as a learning round on it
        offered = []
        dialog.model_ready.connect(offered.append)
        assert dialog.start()
        with qtbot.waitSignal(dialog.process.finished, timeout=20000) as finished:
            pass
        assert finished.args == [0]
        qtbot.waitUntil(lambda: dialog.use_button.isEnabled(), timeout=5000)
        assert [round(loss, 3) for _, loss in dialog.plot.points] == [2.0, 1.0, 0.667, 0.5, 0.4]
        assert dialog.progress.value() == 1
        assert "31.2" in dialog.ap_after.text() and "10.5" in dialog.ap_before.text()
        assert "loading 1 images" in dialog.log.toPlainText()  # only the done image was exported
        assert "lower than the base" not in dialog.log.toPlainText()
        dialog.use_button.click()
        assert offered and offered[0].endswith("model_final.safetensors") and Path(offered[0]).is_file()


def test_a_new_model_that_scores_lower_than_its_base_is_pointed_out(qtbot, blob_project, tmp_path):
    with _done_project(blob_project) as project:
        dialog = _dialog(qtbot, project, tmp_path, "worse")
        with qtbot.waitSignal(dialog.process.finished, timeout=20000):
            assert dialog.start()
        qtbot.waitUntil(lambda: dialog.use_button.isEnabled(), timeout=5000)
    assert (
        "The new model's mask AP on the held-out images is lower than the base's (5.0 against 10.5)"
        in dialog.log.toPlainText()
    )
    assert dialog.use_button.isEnabled()  # pointed out, not refused: the user decides


def test_an_ap_on_one_held_out_image_is_said_to_mean_little_and_the_model_is_used_only_if_confirmed(
    qtbot, blob_project, tmp_path
):
    with _done_project(blob_project) as project:
        dialog = _dialog(qtbot, project, tmp_path, "few")
        offered = []
        dialog.model_ready.connect(offered.append)
        with qtbot.waitSignal(dialog.process.finished, timeout=20000):
            assert dialog.start()
        qtbot.waitUntil(lambda: dialog.use_button.isEnabled(), timeout=5000)
        assert dialog.ap_after.text().endswith("(1 held-out image: not a measure)")
        assert "they say little about the model" in dialog.log.toPlainText()
        asked = answer_dialogs(qtbot, [lambda box: box.button(QMessageBox.StandardButton.No).click()])
        dialog.use_button.click()
        assert asked and "tested on 1 held-out image" in asked[0] and offered == []
        answer_dialogs(qtbot, [lambda box: box.button(QMessageBox.StandardButton.Yes).click()])
        dialog.use_button.click()
        assert len(offered) == 1


def test_the_dialog_runs_main_py_train_for_real_and_its_weights_propose(qtbot, tmp_path):
    from annotator.coco import import_coco
    from annotator.store import Project
    from model.predictor import Predictor
    from model.synthetic import generate

    coco_file = generate(tmp_path / "shapes", 5, seed=3, size=(160, 160))
    with Project.create(tmp_path / "shapes.annot", coco_file.parent / "images") as project:
        import_coco(project, coco_file)
        for image in project.images():
            project.set_review_state(image.id, ReviewState.DONE)
        dialog = FineTuneDialog(project, base_weights=["none"])  # the real command: main.py train
        qtbot.addWidget(dialog)
        dialog.epochs.setValue(1)
        dialog.device.setCurrentText("cpu")
        with qtbot.waitSignal(dialog.process.finished, timeout=120000) as finished:
            assert dialog.start()
    assert finished.args == [0], dialog.log.toPlainText()
    qtbot.waitUntil(lambda: dialog.use_button.isEnabled(), timeout=5000)
    assert [iteration for iteration, _ in dialog.plot.points] == [1, 2]  # 4 training images, 2 a step
    assert dialog.ap_before.text() == "AP before: —"  # a random start is not evaluated
    log = dialog.log.toPlainText()  # main.py's words for a person: where the weights went, the held-out AP
    assert re.search(rf"^done in \d+ s: {re.escape(dialog.weights_path)}$", log, re.MULTILINE)
    assert "AP on the 1 held-out image(s):\nbox        AP" in log
    assert dialog.ap_after.text().startswith("AP after: mask ")
    predictor = Predictor(dialog.weights_path, device="cpu")
    assert predictor.class_names[1:] == ("ellipse", "rectangle", "triangle", "star")  # the project's categories


def test_cancel_kills_the_training_process_tree_and_the_ui_keeps_running(qtbot, blob_project, tmp_path):
    with _done_project(blob_project) as project:
        dialog = _dialog(qtbot, project, tmp_path, "slow")
        dialog.start()
        run_dir = dialog.process.process.args[3]
        qtbot.waitUntil(lambda: (Path(run_dir) / "grandchild.pid").exists(), timeout=10000)
        qtbot.waitUntil(lambda: len(dialog.plot.points) >= 1, timeout=10000)
        grandchild = int((Path(run_dir) / "grandchild.pid").read_text())
        started = time.monotonic()
        with qtbot.waitSignal(dialog.process.finished, timeout=10000):
            dialog.cancel_button.click()
        assert time.monotonic() - started < 5
        assert "cancelled" in dialog.log.toPlainText()
        assert not dialog.use_button.isEnabled()

        def gone(pid: int) -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            # a zombie (exited, not yet reaped by its dead parent's reaper) counts as gone
            status = Path(f"/proc/{pid}/status")
            return status.exists() and "State:\tZ" in status.read_text()

        qtbot.waitUntil(lambda: gone(grandchild), timeout=5000)


def test_fine_tuning_from_the_window_starts_from_the_model_in_use(qtbot, window, blob_project):
    from tests.gui.driving import answer_dialogs, load_model, open_and_wait

    open_and_wait(qtbot, window, blob_project)
    load_model(qtbot, window)  # "blob.pt", as a fine-tuned run's weights would be
    offered = []
    answer_dialogs(
        qtbot,
        [lambda dialog: (offered.extend(dialog.base.itemText(i) for i in range(dialog.base.count())), dialog.reject())],
    )
    window.model_control.fine_tune()
    assert offered[0] == "blob.pt" and offered[1:] == FineTuneDialog.default_bases()
