"""File > Export labelme JSON… and File > Export YOLO segmentation…: a folder dialog, then the
files, and what was written in the status bar."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QFileDialog

from tests.gui.driving import answer_dialogs, open_and_wait


def choose_folder(folder: Path):
    """Answers a folder dialog with ``folder``: nothing selected in it, a folder dialog hands over
    the folder it shows."""

    def answer(dialog: QFileDialog) -> None:
        assert isinstance(dialog, QFileDialog) and dialog.fileMode() == QFileDialog.FileMode.Directory
        dialog.setDirectory(str(folder))
        dialog.accept()

    return answer


def test_file_menu_exports_labelme_files_and_a_yolo_dataset_into_the_folder_chosen(
    qtbot, window, blob_project, tmp_path
):
    assert not window.actions_by_name["export_labelme"].isEnabled()  # no project yet
    open_and_wait(qtbot, window, blob_project)
    mask = np.zeros((90, 120), dtype=bool)
    mask[12:32, 10:40] = True
    window.session.history.add(window.session.image_id, 1, mask=mask)
    labelme, yolo = tmp_path / "labelme", tmp_path / "yolo"
    labelme.mkdir()
    yolo.mkdir()

    shown = answer_dialogs(qtbot, [choose_folder(labelme), lambda box: box.accept()])
    window.actions_by_name["export_labelme"].trigger()
    assert window.status.currentMessage() == f"Wrote 1 labelme file with 1 label to {labelme}"
    (details,) = shown  # what was left out, in a box
    assert details.startswith(f"Wrote 1 labelme file with 1 label to {labelme}\n\n")
    assert "2 images with no labels and not marked done got no file" in details
    data = json.loads((labelme / "00.json").read_text())
    assert [(s["label"], s["shape_type"]) for s in data["shapes"]] == [("blob", "polygon")]
    assert (labelme / data["imagePath"]).resolve() == window.session.project.image_path(
        window.session.project.image(window.session.image_id)
    )

    shown = answer_dialogs(qtbot, [choose_folder(yolo), lambda box: box.accept()])
    window.actions_by_name["export_yolo"].trigger()
    assert window.status.currentMessage() == f"Wrote 1 YOLO label file with 1 label to {yolo}"
    assert f"1 image linked to the project's image folder under {yolo / 'images'}" in shown[0]
    assert (yolo / "labels" / "00.txt").read_text().startswith("0 ")
    assert (yolo / "train.txt").read_text() == "./images/00.png\n"
    assert 'names:\n  0: "blob"\n  1: "animal"\n' in (yolo / "data.yaml").read_text()
