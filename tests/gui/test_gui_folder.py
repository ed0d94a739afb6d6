"""New images in a project's folder: reopening the project says so, and File > Add images adds them."""

from __future__ import annotations

import shutil

from PySide6.QtWidgets import QFileDialog

from annotator.store import Project
from tests.gui.driving import answer_dialogs, open_and_wait


def test_reopening_says_which_images_came_and_went_and_add_images_adds_them(qtbot, window, blob_project):
    with Project.open(blob_project) as project:
        root = project.image_root
    shutil.copy(root / "00.png", root / "new.png")
    (root / "02.png").unlink()
    open_and_wait(qtbot, window, blob_project)
    notice = window.status.folder
    qtbot.waitUntil(lambda: notice.isVisible(), timeout=10000)
    assert notice.text() == "1 new image in the folder (File > Add images… adds them); 1 image missing (02.png)"

    def choose_new_png(dialog: QFileDialog) -> None:
        dialog.selectFile(str(root / "new.png"))
        dialog.accept()

    answer_dialogs(qtbot, [choose_new_png])
    window.actions_by_name["add_images"].trigger()
    assert window.status.currentMessage() == "Added 1 image"
    assert window.session.project.image_count() == 4
    assert len(window.images.visible_ids()) == 4
    assert window.images.filter.currentText() == "All (4)"
    qtbot.waitUntil(lambda: notice.text() == "1 image missing (02.png)", timeout=10000)
