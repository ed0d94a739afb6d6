"""New images in a project's folder: reopening the project says so, and File > Add images adds them."""

from __future__ import annotations

import shutil
from pathlib import Path

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

    opened = []

    def look_and_cancel(dialog: QFileDialog) -> None:
        opened.append(Path(dialog.directory().absolutePath()))
        dialog.reject()

    answer_dialogs(qtbot, [look_and_cancel])
    window.actions_by_name["add_images"].trigger()  # File > Add images: a file dialog in the image folder
    assert opened == [root.resolve()] and window.session.project.image_count() == 3
    # what the dialog hands over when a person picks a file (the dialog itself is Qt's; answering it
    # in a test races with its reading of the folder)
    window.folder.add(window.session, [root / "new.png"])
    assert window.status.currentMessage() == "Added 1 image"
    assert window.session.project.image_count() == 4
    assert len(window.images.visible_ids()) == 4
    assert window.images.filter.currentText() == "All (4)"
    qtbot.waitUntil(lambda: notice.text() == "1 image missing (02.png)", timeout=10000)
