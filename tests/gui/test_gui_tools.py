"""Each canvas tool driven by real mouse and keyboard events, asserting on what the store holds."""

from __future__ import annotations

import numpy as np
from PIL import Image
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtTest import QTest

from annotator.store import Project, ReviewState, Source
from tests.gui.driving import (
    BLOBS,
    at,
    click,
    drag,
    key,
    load_model,
    open_and_wait,
    wait_for_image,
    warnings_shown,
    zoom_4x,
)


def _stored(window):
    return window.session.project.instances(window.session.image_id)


def test_brush_stroke_paints_a_new_instance_and_extends_the_selected_one(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    zoom_4x(window)
    key(window, Qt.Key.Key_B)
    assert window.canvas.tool.name == "brush"
    window.canvas.tool.set_radius(3)
    drag(window, [(20.5, 50.5), (30.5, 50.5), (40.5, 50.5)])
    (instance,) = _stored(window)
    mask = instance.mask
    assert mask[50, 20] and mask[50, 30] and mask[50, 40] and mask[53, 30]
    assert not mask[55, 30] and not mask[50, 45]
    assert instance.source == Source.HUMAN
    assert window.session.selection == [instance.id]
    assert window.session.project.image(window.session.image_id).state == ReviewState.IN_REVIEW
    # a second stroke goes into the selected instance, not a new one
    drag(window, [(30.5, 70.5), (30.5, 72.5)])
    (extended,) = _stored(window)
    assert extended.id == instance.id and extended.mask[71, 30] and extended.area > instance.area


def test_eraser_removes_pixels_and_an_emptied_mask_deletes_the_instance(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    zoom_4x(window)
    project: Project = window.session.project
    mask = np.zeros((90, 120), dtype=bool)
    mask[10:20, 10:40] = True
    instance = project.add_instance(window.session.image_id, 1, mask=mask)
    window.canvas.reload()
    key(window, Qt.Key.Key_E)
    window.canvas.tool.set_radius(2)
    drag(window, [(25.5, 5.5), (25.5, 25.5)])  # nothing selected: erases from the mask under the start?
    after = project.instance(instance.id)
    assert after.area == instance.area  # the stroke began outside every mask: nothing erased
    window.session.select([instance.id])
    drag(window, [(25.5, 5.5), (25.5, 25.5)])
    after = project.instance(instance.id).mask
    assert not after[15, 24:27].any() and after[15, 20] and after[15, 30]
    key(window, Qt.Key.Key_Plus)
    assert window.canvas.tool.radius > 2
    window.canvas.tool.set_radius(30)
    drag(window, [(25.5, 15.5)])
    assert not project.id_in_use("instances", instance.id)


def test_polygon_clicks_become_a_mask_when_closed_on_the_first_vertex(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    zoom_4x(window)
    key(window, Qt.Key.Key_P)
    for x, y in [(10, 10), (50, 10), (50, 30), (10, 30)]:
        click(window, x, y)
    assert _stored(window) == []
    click(window, 10, 10)
    (instance,) = _stored(window)
    assert instance.area == 40 * 20
    assert instance.bbox == (10.0, 10.0, 40.0, 20.0)
    # Enter closes too; Backspace drops the last vertex first
    for x, y in [(60, 50), (90, 50), (90, 80), (100, 85)]:
        click(window, x, y)
    key(window, Qt.Key.Key_Backspace)
    key(window, Qt.Key.Key_Return)
    triangle = _stored(window)[1]  # (60, 50), (90, 50), (90, 80): the dropped vertex is not in it
    x, y, w, h = triangle.bbox
    assert x >= 60 and y >= 50 and x + w <= 90 and y + h <= 80
    assert abs(triangle.area - 30 * 30 / 2) < 30


def test_keypoints_are_placed_dragged_and_cycle_visibility(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    zoom_4x(window)
    project: Project = window.session.project
    mask = np.zeros((90, 120), dtype=bool)
    mask[20:60, 20:80] = True
    instance = project.add_instance(window.session.image_id, 2, mask=mask)  # 'animal', head + tail
    window.canvas.reload()
    window.session.select([instance.id])
    key(window, Qt.Key.Key_K)
    click(window, 30.25, 40.5)
    click(window, 70.5, 45.75)
    points = project.instance(instance.id).keypoints_array
    assert points.tolist() == [[30.25, 40.5, 2.0], [70.5, 45.75, 2.0]]
    drag(window, [(30.25, 40.5), (33, 41), (35.5, 44.25)])
    assert project.instance(instance.id).keypoints_array[0].tolist() == [35.5, 44.25, 2.0]
    click(window, 70.5, 45.75, Qt.MouseButton.RightButton)
    assert project.instance(instance.id).keypoints_array[1, 2] == 1
    click(window, 70.5, 45.75, Qt.MouseButton.RightButton)
    assert project.instance(instance.id).keypoints_array[1].tolist() == [0.0, 0.0, 0.0]
    click(window, 75, 50)  # the freed keypoint is the next one placed
    assert project.instance(instance.id).keypoints_array[1].tolist() == [75.0, 50.0, 2.0]


def test_the_keypoint_under_the_pointer_is_named_on_the_canvas(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    zoom_4x(window)
    mask = np.zeros((90, 120), dtype=bool)
    mask[20:60, 20:80] = True
    instance = window.session.project.add_instance(
        window.session.image_id,
        2,
        mask=mask,  # 'animal'
        keypoints=[30, 40, 2, 70, 45, 1],
    )
    window.canvas.reload()
    window.session.select([instance.id])
    key(window, Qt.Key.Key_K)
    tag = at(window, 70, 45) + QPoint(12, -10)  # inside the tag that stands beside the point

    def brightness_at_tag() -> int:
        return window.canvas.grab().toImage().pixelColor(tag).value()

    QTest.mouseMove(window.canvas, at(window, 100, 80))
    away = brightness_at_tag()
    QTest.mouseMove(window.canvas, at(window, 70.5, 45.5))
    hovering = brightness_at_tag()
    QTest.mouseMove(window.canvas, at(window, 100, 80))
    assert hovering < away - 60 and abs(brightness_at_tag() - away) <= 2


def test_delete_merge_split_and_change_category_with_undo_across_images(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    zoom_4x(window)
    session = window.session
    project: Project = session.project
    first_image = session.image_id
    a = np.zeros((90, 120), dtype=bool)
    a[10:20, 10:20] = True
    b = np.zeros((90, 120), dtype=bool)
    b[40:50, 60:70] = True
    ia = project.add_instance(first_image, 1, mask=a)
    ib = project.add_instance(first_image, 1, mask=b)
    window.canvas.reload()
    key(window, Qt.Key.Key_V)
    click(window, 15, 15)
    click(window, 65, 45, modifiers=Qt.KeyboardModifier.ControlModifier)
    assert session.selection == [ia.id, ib.id]
    key(window, Qt.Key.Key_G, Qt.KeyboardModifier.ControlModifier)  # merge
    (merged,) = _stored(window)
    assert merged.id == ia.id and merged.area == 200
    key(window, Qt.Key.Key_G, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)  # split
    parts = _stored(window)
    assert sorted(p.area for p in parts) == [100, 100] and parts[0].id == ia.id
    window.set_category_of_selection(2)
    assert {p.category_id for p in _stored(window)} == {2}
    session.select([parts[0].id])
    key(window, Qt.Key.Key_Delete)
    assert len(_stored(window)) == 1

    key(window, Qt.Key.Key_D)  # next image; the history stays
    wait_for_image(qtbot, window, first_image + 1)
    undo = (Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    key(window, *undo)  # undoing an edit of another image goes back to it
    assert session.image_id == first_image
    assert len(_stored(window)) == 2
    key(window, *undo)
    assert {p.category_id for p in _stored(window)} == {1}
    key(window, *undo)
    key(window, *undo)
    restored = project.instances(first_image)
    assert [(i.id, i.area) for i in restored] == [(ia.id, 100), (ib.id, 100)]
    assert restored[0].mask.tolist() == a.tolist()
    redo = (Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    for _ in range(4):
        key(window, *redo)
    assert len(project.instances(first_image)) == 1


def test_box_becomes_a_mask_through_the_model(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    zoom_4x(window)
    key(window, Qt.Key.Key_R)
    drag(window, [(2, 2), (30, 30), (50, 40)])  # no model: the box itself
    (rectangle,) = _stored(window)
    assert rectangle.bbox == (2.0, 2.0, 48.0, 38.0)
    load_model(qtbot, window)
    x, y, w, h = BLOBS[1]
    drag(window, [(x - 3, y - 3), (x + w + 3, y + h + 3)])
    qtbot.waitUntil(lambda: len(_stored(window)) == 2, timeout=10000)
    segmented = _stored(window)[1]
    assert window.predictor.box_calls == [(x - 3.0, y - 3.0, x + w + 3.0, y + h + 3.0)]
    assert segmented.bbox == (x, y, w, h) and segmented.area == w * h
    assert segmented.source == Source.HUMAN and segmented.model_version == "blob-net@test"
    assert segmented.score is None  # a person's box: no detection score to show
    rows = {
        window.instances.tree.topLevelItem(r).text(0): window.instances.tree.topLevelItem(r).text(3)
        for r in range(window.instances.tree.topLevelItemCount())
    }
    assert rows == {str(rectangle.id): "drawn", str(segmented.id): "from box"}
    assert segmented.category_id == window.session.current_category_id
    assert window.status.currentMessage() == "Box to mask: added blob"


def test_click_selects_the_best_proposal_or_asks_the_model(qtbot, window, blob_project):
    open_and_wait(qtbot, window, blob_project)
    zoom_4x(window)
    load_model(qtbot, window)
    key(window, Qt.Key.Key_S)
    x, y, w, h = BLOBS[0]
    click(window, x + 5, y + 5)  # nothing there yet: the model is asked
    qtbot.waitUntil(lambda: len(_stored(window)) == 1, timeout=10000)
    (found,) = _stored(window)
    assert found.source == Source.MODEL and found.bbox == (x, y, w, h)
    assert window.session.selection == [found.id]
    window.session.select([])
    click(window, x + 8, y + 8)  # now a proposal is there: selected, no new model call
    assert window.session.selection == [found.id] and len(_stored(window)) == 1
    key(window, Qt.Key.Key_Return)
    assert window.session.project.instance(found.id).source == Source.HUMAN


def test_box_and_click_give_masks_of_a_category_the_real_model_does_not_know(qtbot, settings, tmp_path):
    """The demo model knows four shapes; the project labels cats. A box becomes a 'cat' label with
    the object's mask, and a click on another object a 'cat' proposal (docs/decisions/0016)."""
    from annotator.gui.main_window import MainWindow
    from annotator.gui.proposals import ModelChoice, ModelKind
    from model.synthetic_novel import make_novel_sample
    from resources import bundled_model

    # a cross and a heart: shapes the demo model never saw
    pixels, shapes = make_novel_sample(np.random.default_rng(5), 240, 320, known_shapes=(0, 0), novel_shapes=(2, 2))
    cross, heart = (shape["mask"] for shape in shapes)
    folder = tmp_path / "cats"
    folder.mkdir()
    Image.fromarray(pixels).save(folder / "cat.png")
    path = tmp_path / "cats.annot"
    with Project.create(path, folder) as project:
        project.add_image("cat.png", 320, 240, "hash-cat")
        project.add_category("cat")
    window = MainWindow(settings=settings)  # the real Predictor, in the model thread
    qtbot.addWidget(window)
    window.resize(1000, 700)
    window.show()
    try:
        with warnings_shown() as warnings:  # an error opens a message box: closed and read here
            open_and_wait(qtbot, window, path)
            window.canvas.set_view(1.0, QPointF(0, 0))
            window.load_model(ModelChoice(ModelKind.FILE, str(bundled_model())), "cpu")
            qtbot.waitUntil(lambda: window.proposals.has_model and not window.proposals.busy, timeout=30000)
            assert window.session.current_category.name == "cat"

            key(window, Qt.Key.Key_R)
            ys, xs = np.nonzero(cross)
            drag(window, [(xs.min() - 3, ys.min() - 3), (xs.mean(), ys.mean()), (xs.max() + 4, ys.max() + 4)])
            qtbot.waitUntil(lambda: warnings or len(_stored(window)) == 1 and not window.proposals.busy, timeout=30000)
            assert warnings == []  # not "unknown category 'cat'"
            (label,) = _stored(window)
            assert window.session.project.category(label.category_id).name == "cat" and label.source == Source.HUMAN
            assert (label.mask & cross).sum() / (label.mask | cross).sum() > 0.85
            assert window.status.currentMessage() == "Box to mask: added cat"

            key(window, Qt.Key.Key_S)
            ys, xs = np.nonzero(heart)
            x, y = xs[len(xs) // 2], ys[len(ys) // 2]  # a pixel of the heart
            click(window, x + 0.5, y + 0.5)
            qtbot.waitUntil(lambda: warnings or len(_stored(window)) == 2 and not window.proposals.busy, timeout=30000)
            assert warnings == []
            proposal = _stored(window)[1]
            assert window.session.project.category(proposal.category_id).name == "cat"
            assert proposal.source == Source.MODEL and proposal.mask[y, x] and window.session.selection == [proposal.id]
            assert (proposal.mask & heart).sum() / (proposal.mask | heart).sum() > 0.8
            assert [c.name for c in window.session.project.categories()] == ["cat"]  # no 'ellipse' came in
    finally:
        window.close()
