"""Effort from real use in the window: active seconds go to the image being worked on (pauses and
other windows not counted), a brush stroke on a proposal counts as an edit, and Review > Statistics
shows the table and the plot."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from annotator.effort import LabelOrigin, label_origin
from annotator.gui.statistics import StatisticsDialog
from annotator.store import Project
from tests.gui.driving import answer_dialogs, at, drag, key, load_model, open_and_wait, wait_for_image, zoom_4x


def work(qtbot, window, moves: int, pause_ms: int) -> None:
    """``moves`` mouse moves over the canvas, ``pause_ms`` apart."""
    for step in range(moves):
        QTest.mouseMove(window.canvas, at(window, 20 + step, 20))
        qtbot.wait(pause_ms)


def test_active_seconds_go_to_the_image_worked_on_and_pauses_do_not_count(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    first = window.session.image_id
    work(qtbot, window, moves=6, pause_ms=50)
    key(window, Qt.Key.Key_D)
    wait_for_image(qtbot, window, first + 1)
    window.activity.clock.idle_limit = 0.1  # so that a pause of 0.3 s is idle
    work(qtbot, window, moves=3, pause_ms=300)
    window.activity.flush()
    project = window.session.project
    worked = project.image(first).active_seconds
    assert 0.2 <= worked <= 2.0  # five gaps of about 50 ms, the first move on the image not counted
    # only pauses there (one mouse move may come as two events a millisecond apart)
    assert project.image(first + 1).active_seconds < 0.05
    assert project.image(first + 2).active_seconds == 0  # never shown


def test_a_stroke_on_a_proposal_is_an_edit_and_statistics_show_it(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    load_model(qtbot, window)
    first = window.session.image_id
    window.model_control.propose_current()
    qtbot.waitUntil(lambda: len(window.session.instances()) == 2, timeout=10000)
    zoom_4x(window)
    proposal = min(window.session.instances(), key=lambda i: i.bbox[0])  # the blob at (10, 12)
    window.session.select([proposal.id])
    window.set_tool("brush")
    drag(window, [(41, 20), (44, 20)])  # paints past the blob's right edge
    key(window, Qt.Key.Key_Space)  # done: the other proposal is accepted as it is
    wait_for_image(qtbot, window, first + 1)
    project: Project = window.session.project
    origins = sorted(label_origin(i) for i in project.instances(first))
    assert origins == sorted([LabelOrigin.CORRECTED, LabelOrigin.ACCEPTED])
    assert project.instance(proposal.id).edits == 1

    seen = []
    answer_dialogs(qtbot, [lambda dialog: (seen.append(dialog), dialog.reject())])
    window.actions_by_name["statistics"].trigger()
    (dialog,) = seen
    assert isinstance(dialog, StatisticsDialog)
    table = dialog.model_table
    assert [table.item(0, c).text() for c in range(4)] == ["blob-net@test", "1", "2", "50%"]
    assert table.item(0, 7).text() == "0.50"  # one edit on two labels
    assert dialog.chart_view.chart().series()[0].count() == 1
    QApplication.processEvents()


def test_statistics_of_a_project_with_nothing_done_say_where_they_start(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    dialog = StatisticsDialog(window.session.project, window)
    qtbot.addWidget(dialog)
    assert not hasattr(dialog, "model_table")
    assert dialog.by_model == [] and dialog.over_time == []
