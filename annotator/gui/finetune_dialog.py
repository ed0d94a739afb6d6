"""Fine-tuning from the app: pick base weights, epochs and the held-out fraction; the images
marked done are exported as COCO and ``main.py train`` runs as a child process while the dialog
shows progress, a loss plot and AP before and after on the held-out images. A finished run's
weights can become the proposal model at once."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from annotator.gui.training import TrainingProcess
from annotator.learning import MIN_HELD_OUT_IMAGES, RoundSettings, TrainingRequest, mask_ap, train_command
from annotator.model_history import runs_dir
from annotator.store import Project, ReviewState
from annotator.wording import counted


class LossPlot(QWidget):
    """Training loss against iteration, painted directly (no plotting library)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.points: list[tuple[float, float]] = []
        self.setMinimumSize(360, 160)

    def add(self, iteration: float, loss: float) -> None:
        self.points.append((iteration, loss))
        self.update()

    def clear(self) -> None:
        self.points = []
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(30, 30, 30))
        margin = 28
        area = self.rect().adjusted(margin, 8, -8, -margin)
        painter.setPen(QColor(120, 120, 120))
        painter.drawRect(area)
        if len(self.points) < 1:
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "loss")
            return
        # a point every step: a long run keeps about one point per pixel column, the last one always
        stride = max(1, len(self.points) // max(1, area.width()))
        shown = self.points[::stride] + ([self.points[-1]] if (len(self.points) - 1) % stride else [])
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        x0, x1 = min(xs), max(max(xs), min(xs) + 1)
        y0, y1 = 0.0, max(ys) * 1.05 or 1.0
        line = QPolygonF(
            [
                QPointF(
                    area.left() + (x - x0) / (x1 - x0) * area.width(),
                    area.bottom() - (y - y0) / (y1 - y0) * area.height(),
                )
                for x, y in shown
            ]
        )
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setPen(QPen(QColor("#ff7f0e"), 1.5))
        painter.drawPolyline(line)
        painter.setPen(QColor(200, 200, 200))
        painter.drawText(4, area.top() + 10, f"{y1:.2f}")
        painter.drawText(4, area.bottom(), "0")
        painter.drawText(area.left(), self.height() - 8, f"iteration {int(x0)}")
        painter.drawText(area.right() - 80, self.height() - 8, f"{int(x1)}")
        painter.drawText(
            area.adjusted(0, 0, -4, 0), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop, f"loss {ys[-1]:.3f}"
        )


def _ap_text(event: dict) -> str:
    """ "mask 61.2, box 70.3, keypoints 55.0": the COCO APs of an eval event, in percent."""
    names = {"segm": "mask", "bbox": "box", "keypoints": "keypoints"}
    parts = [
        f"{label} {100 * event[key]['AP']:.1f}"
        for key, label in names.items()
        if isinstance(event.get(key), dict) and isinstance(event[key].get("AP"), (int, float))
    ]
    return ", ".join(parts) or "—"


class FineTuneDialog(QDialog):
    model_ready = Signal(str)  # path of the fine-tuned weights

    def __init__(
        self,
        project: Project,
        parent: QWidget | None = None,
        base_weights: list[str] | None = None,
        command_factory: Callable[[TrainingRequest, Path, Path], list[str]] = train_command,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Fine-tune the model on the images marked done")
        self.project = project
        self.command_factory = command_factory
        self.process = TrainingProcess(self)
        self.process.event.connect(self._on_event)
        self.process.log.connect(self._on_log)
        self.process.finished.connect(self._on_finished)
        self.weights_path = ""
        self._before: dict | None = None  # the eval event of the base model
        self.held_out_images = 0  # the held-out images the new model was measured on

        self.base = QComboBox()
        self.base.setEditable(True)
        self.base.addItems(base_weights or self.default_bases())
        self.val_fraction = QDoubleSpinBox()
        self.val_fraction.setRange(0.0, 0.5)
        self.val_fraction.setSingleStep(0.05)
        self.val_fraction.setValue(0.2)
        done = project.review_state_counts()[ReviewState.DONE]
        from model.data import held_out_count  # imports torch: only when the dialog opens
        from model.devices import device_choices

        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        # as long as a learning round trains on the images not held out (docs/decisions/0013-learning-loop.md)
        self.epochs.setValue(RoundSettings().whole_epochs(done - held_out_count(done, self.val_fraction.value())))
        self.device = QComboBox()

        self.device.addItems(device_choices())
        self.summary = QLabel(f"{done} images are marked done and will be used.")
        form = QFormLayout()
        form.addRow("Base weights", self.base)
        form.addRow("Epochs", self.epochs)
        form.addRow("Held-out fraction", self.val_fraction)
        form.addRow("Device", self.device)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.plot = LossPlot()
        self.ap_before = QLabel("AP before: —")
        self.ap_after = QLabel("AP after: —")
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.start_button = QPushButton("Start")
        self.cancel_button = QPushButton("Cancel training")
        self.cancel_button.setEnabled(False)
        self.use_button = QPushButton("Use the new model for proposals")
        self.use_button.setEnabled(False)
        close = QPushButton("Close")
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.process.cancel)
        self.use_button.clicked.connect(self._use_model)
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        for button in (self.start_button, self.cancel_button, self.use_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(close)
        aps = QHBoxLayout()
        aps.addWidget(self.ap_before)
        aps.addWidget(self.ap_after)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.summary)
        layout.addWidget(self.progress)
        layout.addWidget(self.plot, 1)
        layout.addLayout(aps)
        layout.addWidget(self.log)
        layout.addLayout(buttons)
        self.resize(640, 600)

    @staticmethod
    def default_bases() -> list[str]:
        """The bundled demo model, then the registry's weights."""
        from annotator.gui.model_picker import combined_choices, registry_choices
        from resources import bundled_model

        demo = bundled_model()
        return ([str(demo)] if demo else []) + [choice.name for choice in registry_choices() + combined_choices()]

    def request(self) -> TrainingRequest:
        run = runs_dir(self.project.path) / time.strftime("run-%Y%m%d-%H%M%S")
        return TrainingRequest(
            self.base.currentText(), self.epochs.value(), self.val_fraction.value(), self.device.currentText(), run
        )

    def start(self) -> bool:
        from annotator.coco import export_coco

        if self.project.review_state_counts()[ReviewState.DONE] == 0:
            self._on_log("No image is marked done yet: review some images first (Space marks done).")
            return False
        request = self.request()
        request.run_dir.mkdir(parents=True, exist_ok=True)
        coco_file = request.run_dir / "train.json"
        counts = export_coco(self.project, coco_file, only_done=True, rle=True)
        self._on_log(f"Exported {counts['images']} images, {counts['annotations']} annotations to {coco_file}")
        command = self.command_factory(request, coco_file, self.project.image_root)
        self.plot.clear()
        self.weights_path, self._before, self.held_out_images = "", None, 0
        self.ap_before.setText("AP before: —")
        self.ap_after.setText("AP after: —")
        self.use_button.setEnabled(False)
        self.process.start(command, cwd=request.run_dir)
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)  # busy until the first progress event
        return True

    def _on_event(self, event: dict) -> None:
        kind = event["event"]
        if kind == "progress":
            total, done = int(event.get("total", 0) or 0), int(event.get("iteration", 0) or 0)
            if total:
                self.progress.setRange(0, total)
                self.progress.setValue(done)
            if "loss" in event:
                self.plot.add(done, float(event["loss"]))
            if "epoch" in event:
                self.progress.setFormat(f"epoch {event['epoch']} — %p%")
        elif kind == "eval":
            self._on_eval(event)
        elif kind == "checkpoint":
            self._on_log(f"checkpoint {event.get('path', '')}")
        elif kind == "done":
            self.weights_path = str(event.get("path") or event.get("weights") or "")
            self.use_button.setEnabled(bool(self.weights_path))
        elif kind == "error":
            self._on_log(f"error: {event.get('message', event)}")

    def _on_eval(self, event: dict) -> None:
        """AP before and after on the held-out images; with too few of them, said to mean little."""
        stage = event.get("stage")
        images = int(event.get("images", 0) or 0)
        label = self.ap_before if stage == "before" else self.ap_after
        few = f" ({counted(images, 'held-out image')}: not a measure)" if images < MIN_HELD_OUT_IMAGES else ""
        label.setText(f"AP {stage or ''}: {_ap_text(event)}{few}")
        if stage == "before":
            self._before = event
            return
        if stage != "after":
            return
        self.held_out_images = images
        after, before = mask_ap(event), mask_ap(self._before)
        if few:
            self._on_log(
                f"The APs come from {counted(images, 'held-out image')}: they say little about the model. "
                "Mark more images done, or raise the held-out fraction, to compare models."
            )
        elif after is not None and before is not None and after < before:
            self._on_log(
                f"The new model's mask AP on the held-out images is lower than the base's "
                f"({100 * after:.1f} against {100 * before:.1f}): you may want to keep the current model."
            )

    def _on_log(self, line: str) -> None:
        self.log.appendPlainText(line)

    def _on_finished(self, status: int) -> None:
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if status == 0 else 0)
        if self.process.cancelled:
            self._on_log("Training cancelled.")
        elif status != 0:
            self._on_log(f"Training failed (exit status {status}).")
        else:
            self._on_log("Training finished." + (f" New weights: {self.weights_path}" if self.weights_path else ""))

    def _use_model(self) -> None:
        """Offers the new weights; a model nobody could measure (too few held-out images) only after
        the person confirms."""
        if not self.weights_path:
            return
        if self.held_out_images < MIN_HELD_OUT_IMAGES:
            answer = QMessageBox.question(
                self,
                "Use the new model?",
                f"The new model was tested on {counted(self.held_out_images, 'held-out image')}: its AP says"
                " little about whether it is better. Use it anyway?",
            )
            if answer != QMessageBox.StandardButton.Yes:
                return
        self.model_ready.emit(self.weights_path)
        self.close()

    def closeEvent(self, event) -> None:
        self.process.cancel(grace_ms=0) if self.process.running else None
        super().closeEvent(event)
