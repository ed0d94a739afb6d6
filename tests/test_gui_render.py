"""What the canvas paints: mask overlays where the mask data says, in the category colour; and a
large image paints from a coarse pyramid level at a cost that does not grow with the image."""

from __future__ import annotations

import time

import numpy as np
from PySide6.QtCore import QPointF
from PySide6.QtGui import QColor, QImage

from annotator.gui.canvas import MASK_OPACITY, Canvas
from annotator.gui.pyramid import build_pyramid
from annotator.gui.session import Session
from annotator.store import Project


def _grab(canvas: Canvas) -> np.ndarray:
    image = canvas.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    bits = np.frombuffer(image.constBits(), dtype=np.uint8).reshape(image.height(), image.bytesPerLine())
    return bits[:, : image.width() * 3].reshape(image.height(), image.width(), 3).copy()


def test_mask_overlay_pixels_match_the_mask_data(qtbot, tmp_path):
    width, height = 64, 48
    with Project.create(tmp_path / "p.annot", tmp_path) as project:
        image = project.add_image("a.png", width, height, "hash")
        category = project.add_category("thing", color="#ff0000")
        mask = np.zeros((height, width), dtype=bool)
        mask[10:30, 8:40] = True
        mask[18:22, 20:26] = False  # a hole: must stay unpainted
        mask[35:40, 50:60] = True  # a second part
        project.add_instance(image.id, category.id, mask=mask)
        session = Session(project)
        canvas = Canvas(session)
        qtbot.addWidget(canvas)
        canvas.resize(width * 2, height * 2)
        canvas.show()
        session.set_image(image.id)
        canvas.set_pyramid(build_pyramid(np.full((height, width, 3), 100, dtype=np.uint8)))
        canvas.set_view(2.0, QPointF(0, 0))  # image pixel (j, i) -> widget [2j, 2j+2) x [2i, 2i+2)
        pixels = _grab(canvas)[: height * 2 : 2, : width * 2 : 2].astype(float)  # one sample per image pixel

        red = np.array(QColor("#ff0000").getRgb()[:3], dtype=float)
        expected_inside = (1 - MASK_OPACITY) * 100 + MASK_OPACITY * red
        # the outline is drawn over the boundary; compare pixels away from it
        import cv2

        inner = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        outer = ~cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert inner.sum() > 300 and outer.sum() > 1000
        assert np.abs(pixels[inner] - expected_inside).max() <= 3
        assert np.abs(pixels[outer] - 100).max() <= 1
        assert np.abs(pixels[19:21, 22:24] - 100).max() <= 1  # the hole's centre
        canvas.close()
        session.deleteLater()


def test_a_large_image_paints_from_a_coarse_level_in_bounded_time(qtbot):
    height, width = 6000, 8000  # 48 megapixels
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, :, 1] = (np.arange(width) % 256).astype(np.uint8)[None, :]
    started = time.perf_counter()
    pyramid = build_pyramid(pixels)
    build_seconds = time.perf_counter() - started
    assert max(pyramid.levels[-1].shape[:2]) <= 1024 and len(pyramid.levels) == 4

    canvas = Canvas()
    qtbot.addWidget(canvas)
    canvas.resize(1000, 700)
    canvas.show()
    qtbot.waitExposed(canvas)
    canvas.set_pyramid(pyramid)
    canvas.fit()
    assert canvas.scale < 0.2
    canvas.grab()
    assert canvas.last_level == pyramid.level_for_scale(canvas.scale) >= 2

    def frame_ms() -> float:
        started = time.perf_counter()
        for _ in range(5):
            canvas.grab()
        return (time.perf_counter() - started) / 5 * 1000

    fitted = frame_ms()
    canvas.zoom_to(1.0, QPointF(500, 350))
    canvas.grab()
    assert canvas.last_level == 0
    one_to_one = frame_ms()
    # generous bounds: the point is that a frame costs the window's size, not the image's
    assert fitted < 100 and one_to_one < 100, (fitted, one_to_one, build_seconds)
    canvas.close()
