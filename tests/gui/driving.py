"""Shared pieces of the GUI tests: a project of synthetic images with bright boxes, a small torch
predictor that really computes (so the model thread is exercised, not faked), and helpers that
drive the canvas with real mouse events in image coordinates."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PySide6.QtCore import QPoint, QPointF, Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QDialog, QMessageBox

from annotator.gui.main_window import MainWindow
from annotator.gui.proposals import ModelChoice, ModelKind

# Bright rectangles (x, y, w, h) on a dark background: what the tiny predictor should find.
BLOBS = [(10, 12, 30, 20), (60, 40, 25, 30)]
IMAGE_SIZE = (120, 90)  # width, height


def write_blob_images(folder: Path, count: int = 3) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(count):
        pixels = np.full((IMAGE_SIZE[1], IMAGE_SIZE[0], 3), 30, dtype=np.uint8)
        for number, (x, y, w, h) in enumerate(BLOBS):
            pixels[y : y + h, x : x + w] = 200 + 20 * number
        name = f"{index:02d}.png"
        Image.fromarray(pixels).save(folder / name)
        names.append(name)
    return names


class BlobPredictor:
    """Finds bright regions with a real (small) torch computation: a few convolutions over the
    image, then connected parts of the thresholded result. ``work`` repeats the convolutions to
    make a prediction take noticeable time."""

    def __init__(self, work: int = 1, delay: float = 0.0) -> None:
        self.model_version = "blob-net@test"
        self.device = "cpu"
        self.work = work
        self.delay = delay
        self.calls = 0
        self.box_calls: list[tuple] = []
        self.prepared = 0  # images whose features were computed ahead (the app's ``prepare``)
        self.prepare_delay = 0.0
        torch.manual_seed(0)
        self.kernel = torch.full((1, 1, 3, 3), 1 / 9)

    def _bright(self, image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.array(image)).float().mean(dim=2)[None, None] / 255
        smooth = x
        for _ in range(self.work):
            smooth = torch.nn.functional.conv2d(smooth, self.kernel, padding=1)
        if self.delay:
            time.sleep(self.delay)
        # the smoothed image only feeds the score; masks stay exact so tests can compare pixels
        self.last_smooth = smooth
        return (x[0, 0] > 0.5).numpy()

    def _instances(self, mask: np.ndarray, image: np.ndarray):
        import cv2

        count, labels = cv2.connectedComponents(mask.astype(np.uint8))
        masks, boxes, scores = [], [], []
        for label in range(1, count):
            part = labels == label
            ys, xs = np.nonzero(part)
            masks.append(part)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            scores.append(float(image[part].mean()) / 255)
        return _Instances(
            np.array(boxes, dtype=np.float32).reshape(-1, 4),
            np.array(scores, dtype=np.float32),
            ["blob"] * len(masks),
            np.array(masks, dtype=bool).reshape(-1, *mask.shape),
            self.model_version,
        )

    def predict(self, image: np.ndarray):
        self.calls += 1
        return self._instances(self._bright(image), image)

    def prepare(self, image: np.ndarray) -> None:
        time.sleep(self.prepare_delay)  # what a backbone takes
        self.prepared += 1

    def predict_in_box(self, image: np.ndarray, box, label=None):
        self.box_calls.append(tuple(box))
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        bright = self._bright(image)
        inside = np.zeros_like(bright)
        inside[y1:y2, x1:x2] = bright[y1:y2, x1:x2]
        return self._instances(inside, image)


class _Instances:
    def __init__(self, boxes, scores, names, masks, version) -> None:
        self.boxes, self.scores, self.label_names, self.masks = boxes, scores, names, masks
        self.labels = np.arange(len(names))
        self.keypoints = None
        self.model_version = version


def make_window(qtbot, settings, predictor=None) -> MainWindow:
    predictor = predictor or BlobPredictor()
    window = MainWindow(predictor_factory=lambda choice, device: predictor, settings=settings)
    window.predictor = predictor
    qtbot.addWidget(window)
    window.resize(1000, 700)
    window.show()
    qtbot.waitExposed(window)
    return window


def open_and_wait(qtbot, window: MainWindow, path: Path) -> None:
    window.open_path(path)
    qtbot.waitUntil(lambda: window.image_ready, timeout=10000)


def wait_for_image(qtbot, window: MainWindow, image_id: int) -> None:
    qtbot.waitUntil(lambda: window.session.image_id == image_id and window.image_ready, timeout=10000)


def load_model(qtbot, window: MainWindow) -> None:
    window.load_model(ModelChoice(ModelKind.FILE, "blob.pt"), "cpu")
    qtbot.waitUntil(lambda: window.proposals.has_model and not window.proposals.busy, timeout=10000)


def at(window: MainWindow, x: float, y: float) -> QPoint:
    """The widget pixel over image point ``(x, y)``."""
    return window.canvas.image_to_widget(QPointF(x, y)).toPoint()


def click(
    window: MainWindow, x: float, y: float, button=Qt.MouseButton.LeftButton, modifiers=Qt.KeyboardModifier.NoModifier
) -> None:
    QTest.mouseClick(window.canvas, button, modifiers, at(window, x, y))


def drag(window: MainWindow, points: list[tuple[float, float]], button=Qt.MouseButton.LeftButton) -> None:
    canvas = window.canvas
    QTest.mousePress(canvas, button, Qt.KeyboardModifier.NoModifier, at(window, *points[0]))
    for point in points[1:]:
        QTest.mouseMove(canvas, at(window, *point))
    QTest.mouseRelease(canvas, button, Qt.KeyboardModifier.NoModifier, at(window, *points[-1]))


def key(window: MainWindow, key: Qt.Key, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    QTest.keyClick(window.canvas, key, modifiers)


def zoom_4x(window: MainWindow) -> None:
    """Scale 4 with the image at the widget's origin: image pixel (j, i) is widget pixels
    [4j, 4j+4) x [4i, 4i+4), so clicks land where the test says."""
    window.canvas.set_view(4.0, QPointF(0, 0))


@contextmanager
def warnings_shown() -> Iterator[list[str]]:
    """The texts of the message boxes that open inside the block, each closed as it opens (so that
    a test that expects none fails instead of waiting for a click)."""
    texts: list[str] = []

    def poll() -> None:
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox):
            texts.append(box.text())
            box.accept()

    timer = QTimer(QApplication.instance())
    timer.timeout.connect(poll)
    timer.start(20)
    try:
        yield texts
    finally:
        timer.stop()
        timer.deleteLater()


def answer_dialogs(qtbot, answers: list[Callable[[QDialog], None]]) -> list[str]:
    """Runs each answer on the next modal dialog that opens, in order; returns the texts of the
    message boxes among them, filled in as they are answered."""
    warnings: list[str] = []
    pending = list(answers)

    def poll() -> None:
        if not pending:  # done: deleted by Qt on this thread, not by a garbage collection elsewhere
            timer.stop()
            timer.deleteLater()
            return
        dialog = QApplication.activeModalWidget()
        if dialog is None:
            return  # an answered dialog is hidden, so it is not the active one until shown again
        if isinstance(dialog, QMessageBox):
            warnings.append(dialog.text())
        pending.pop(0)(dialog)

    timer = QTimer(QApplication.instance())
    timer.timeout.connect(poll)
    timer.start(20)
    return warnings
