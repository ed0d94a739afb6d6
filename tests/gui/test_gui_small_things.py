"""Small things a labeller's day met: the score threshold is kept per project, and the category a
new shape gets is in view before drawing."""

from __future__ import annotations

import shutil

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QColor
from PySide6.QtTest import QTest

from tests.gui.driving import at, drag, key, make_window, open_and_wait, zoom_4x


def test_the_score_threshold_is_kept_per_project(qtbot, settings, blob_project, tmp_path):
    other = tmp_path / "other.annot"
    shutil.copy(blob_project, other)
    window = make_window(qtbot, settings)
    open_and_wait(qtbot, window, blob_project)
    window.instances.threshold.setValue(100)  # hides every proposal of this project
    open_and_wait(qtbot, window, other)
    assert window.session.view.score_threshold == 0.5 and window.instances.threshold.value() == 50
    window.close()
    again = make_window(qtbot, settings)
    open_and_wait(qtbot, again, blob_project)
    assert again.session.view.score_threshold == 1.0
    again.close()


def test_the_category_new_shapes_get_is_shown_and_follows_a_click_in_the_panel(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    shown = window.status.new_shapes
    assert "blob" in shown.text()
    categories = window.categories.list
    rect = categories.visualItemRect(categories.item(1))
    QTest.mouseClick(categories.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, rect.center())
    qtbot.waitUntil(lambda: "animal" in shown.text(), timeout=2000)
    assert shown.isVisible()


def test_overlays_hide_with_h_and_let_the_image_through_at_a_lower_opacity(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    zoom_4x(window)
    key(window, Qt.Key.Key_R)
    drag(window, [(60, 40), (85, 70)])  # a box label over the second blob (no model: the box)
    window.session.select([])
    inside = at(window, 72, 55)

    def pixel() -> QColor:
        return window.canvas.grab().toImage().pixelColor(inside)

    drawn = pixel()
    key(window, Qt.Key.Key_H)
    bare = pixel()
    assert bare != drawn and window.actions_by_name["hide_overlays"].isChecked()
    key(window, Qt.Key.Key_H)
    assert pixel() == drawn
    quarter = next(a for a in window.findChildren(QAction) if a.text() == "25%")  # View > Overlay opacity
    quarter.trigger()
    assert window.canvas.overlay_opacity == 0.25
    faint = pixel()
    assert abs(faint.red() - bare.red()) < abs(drawn.red() - bare.red())  # nearer the image beneath
