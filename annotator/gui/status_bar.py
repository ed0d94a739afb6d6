"""The status bar: messages, whether the project is read-only, what changed in the image folder,
image size, zoom, cursor position (image pixels), model and device."""

from __future__ import annotations

import math
from html import escape

from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QStatusBar, QWidget


class StatusBar(QStatusBar):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(160)
        self.progress.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        self.image_size = QLabel()
        self.zoom = QLabel()
        self.cursor = QLabel()
        self.model = QLabel("no model (Model → Choose model)")
        # what changed in the image folder since the project last saw it: stays until it is dealt
        # with (a passing message would be gone under the next image's name)
        self.folder = QLabel()
        self.folder.setVisible(False)
        # a project that cannot be written, and why: stays while it is open (annotator.gui.read_only)
        self.read_only = QLabel()
        self.read_only.setVisible(False)
        # a learning round running in the background: how far its training is (annotator.gui.learning)
        self.learning = QLabel()
        self.learning.setVisible(False)
        # the category a new shape gets, visible before drawing (labelme asks after each shape)
        self.new_shapes = QLabel()
        self.new_shapes.setToolTip("The category new shapes get: pick another in the Categories panel")
        for widget in (
            self.read_only,
            self.new_shapes,
            self.folder,
            self.learning,
            self.progress,
            self.cancel_button,
            self.image_size,
            self.zoom,
            self.cursor,
            self.model,
        ):
            self.addPermanentWidget(widget)
        self.cursor.setMinimumWidth(110)

    def set_folder_notice(self, text: str) -> None:
        self.folder.setText(text)
        self.folder.setToolTip(text)
        self.folder.setVisible(bool(text))

    def set_read_only_notice(self, reason: str, details: str = "") -> None:
        """Says, until another project opens, that this one can only be read and why: ``reason`` in
        a few words, ``details`` in the tooltip ("" for a project that can be written)."""
        self.read_only.setText(f"<b>Read-only</b>: {escape(reason)}" if reason else "")
        self.read_only.setToolTip(details)
        self.read_only.setVisible(bool(reason))

    def set_new_shape_category(self, name: str, color: str) -> None:
        """Shows the category new shapes get, in its colour ("" for none: the first shape makes one)."""
        text = f'New shapes: <b style="color:{color}">■</b> {escape(name)}' if name else "New shapes: object (new)"
        self.new_shapes.setText(text)

    def set_learning(self, text: str) -> None:
        """What the running learning round is doing ("" when none runs)."""
        self.learning.setText(text)
        self.learning.setVisible(bool(text))

    def set_image_size(self, width: int, height: int) -> None:
        self.image_size.setText(f"{width} × {height}" if width else "")

    def set_zoom(self, scale: float) -> None:
        self.zoom.setText(f"{scale * 100:.0f}%")

    def set_cursor(self, x: float, y: float, width: int, height: int) -> None:
        # the pixel under the cursor: pixel (col j, row i) covers [j, j+1) x [i, i+1)
        col, row = math.floor(x), math.floor(y)
        inside = 0 <= col < width and 0 <= row < height
        self.cursor.setText(f"x {col}, y {row}" if inside else "")

    def set_model(self, version: str, device: str, knowledge: str = "") -> None:
        """The model in use and what it runs on: a device, or a device and precision ("cpu · bf16");
        what it knows (its classes) in the tooltip."""
        self.model.setText(f"{version} on {device}" if version else "no model (Model → Choose model)")
        self.model.setToolTip(knowledge)

    def set_progress(self, done: int, total: int) -> None:
        self.progress.setVisible(total > 0 and done < total)
        self.cancel_button.setVisible(total > 0 and done < total)
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.progress.setFormat(f"{done}/{total}")
