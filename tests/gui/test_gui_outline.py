"""Editing a polygon after it was drawn, as labelme does, through real mouse and key events: drag a
vertex, insert one on an edge, delete one; the mask follows; undo takes each back. An instance
without an outline gets one traced from its mask."""

from __future__ import annotations

from PySide6.QtCore import Qt

from tests.gui.driving import click, drag, key, open_and_wait, zoom_4x


def stored(window):
    return window.session.project.instances(window.session.image_id)


def test_a_drawn_polygon_is_edited_vertex_by_vertex_and_undo_takes_each_edit_back(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    zoom_4x(window)
    key(window, Qt.Key.Key_P)
    for x, y in [(10, 10), (50, 10), (50, 30), (10, 30), (10, 10)]:
        click(window, x, y)
    (square,) = stored(window)
    assert square.area == 40 * 20 and square.polygons == ((10.0, 10.0, 50.0, 10.0, 50.0, 30.0, 10.0, 30.0),)
    key(window, Qt.Key.Key_O)  # Edit outline, on the new polygon (selected)
    drag(window, [(50, 30), (55, 35), (60, 40)])  # the lower right corner moves out
    moved = stored(window)[0]
    assert moved.polygons == ((10.0, 10.0, 50.0, 10.0, 60.0, 40.0, 10.0, 30.0),)
    assert moved.area > square.area and moved.edits == 1
    click(window, 30, 10)  # on the top edge: a vertex comes in there
    assert stored(window)[0].polygons[0][:6] == (10.0, 10.0, 30.0, 10.0, 50.0, 10.0)
    click(window, 10, 30, button=Qt.MouseButton.RightButton)  # the lower left corner goes
    assert len(stored(window)[0].polygons[0]) == 8
    for expected in (5, 4, 4):  # vertices before each undone step: 5 after the insert, 4 after the move...
        key(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
        assert len(stored(window)[0].polygons[0]) == 2 * expected
    assert stored(window)[0] == square


def test_an_instance_without_an_outline_gets_one_traced_from_its_mask(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    zoom_4x(window)
    key(window, Qt.Key.Key_R)
    drag(window, [(10, 10), (40, 30)])  # no model: the box itself, as a mask without an outline
    (box,) = stored(window)
    window.session.history.update(box.id, mask=box.mask)  # a painted mask: no outline kept
    assert stored(window)[0].polygons is None
    key(window, Qt.Key.Key_O)
    drag(window, [(40, 30), (45, 35), (50, 40)])  # the traced corner, a quarter pixel inside
    edited = stored(window)[0]
    assert edited.polygons is not None and len(edited.polygons[0]) == 8  # 4 corners, not a staircase
    assert edited.area > box.area
