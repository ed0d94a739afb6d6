"""Choosing the proposal model: published weights from the registry, a local weights file, or a
fine-tuned run of this project; and the device. Registry weights not yet in the cache are
downloaded once, with a progress dialog that can cancel the download."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QProgressDialog,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from annotator.gui.proposals import ModelChoice, ModelKind, ProposalService
from annotator.model_history import runs_dir

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")


def registry_choices() -> list[ModelChoice]:
    try:
        from model.weights.registry import REGISTRY  # imports torch: only when the dialog opens
    except Exception:
        return []
    return [
        ModelChoice(ModelKind.REGISTRY, name, f"{name}  ({info.file_size_mb:.0f} MB download once)")
        for name, info in REGISTRY.items()
    ]


def combined_choices() -> list[ModelChoice]:
    """The registry's combined entries (two published networks run as one, ``model.person_pose``):
    for proposals, and a base to fine-tune (``model.weights.transfer.join_keypoint_head``)."""
    try:
        from model.weights.registry import COMBINED  # imports torch: only when the dialog opens
    except Exception:
        return []
    return [
        ModelChoice(ModelKind.REGISTRY, name, f"{name}  ({info.file_size_mb:.0f} MB in two files, download once)")
        for name, info in COMBINED.items()
    ]


def run_choices(project_path: Path | None) -> list[ModelChoice]:
    if project_path is None or not runs_dir(project_path).is_dir():
        return []
    found = []
    for run in sorted(runs_dir(project_path).iterdir(), reverse=True):
        for suffix in WEIGHT_SUFFIXES:
            files = sorted(run.glob(f"*{suffix}")) if run.is_dir() else []
            if files:
                found.append(ModelChoice(ModelKind.RUN, str(files[-1]), f"fine-tuned: {run.name}"))
                break
    return found


def model_knowledge(choice: ModelChoice) -> str:
    """What the chosen model knows, for the picker and the status bar (``model.weights.summary``;
    imports torch, as loading a model does anyway)."""
    from model.weights.summary import what_it_knows

    return what_it_knows(choice.name)


class ModelPickerDialog(QDialog):
    def __init__(self, project_path: Path | None, parent: QWidget | None = None, precision: str = "auto") -> None:
        super().__init__(parent)
        self.setWindowTitle("Choose the proposal model")
        self.list = QListWidget()
        from resources import bundled_model

        demo = bundled_model()
        choices = run_choices(project_path)
        choices += [ModelChoice(ModelKind.FILE, str(demo), "bundled demo model")] if demo else []
        choices += registry_choices() + combined_choices()
        for choice in choices:
            self._add(choice)
        browse = QPushButton("Local weights file…")
        browse.clicked.connect(self._browse)
        self.device = QComboBox()
        from model.devices import device_choices  # imports torch: only when the dialog opens

        self.device.addItems(device_choices())
        # what the CPU computes in (model.precision): auto is bf16 where the processor has it and it
        # agrees with fp32 on the model (model.precision_check), else fp32
        from model.cli import PRECISION_CHOICES

        self.precision = QComboBox()
        self.precision.addItems(PRECISION_CHOICES)
        self.precision.setToolTip(
            "auto: bf16 on a CPU that computes in it (checked once against fp32 on your model), else fp32"
        )
        self.precision.setCurrentText(precision)
        form = QFormLayout()
        form.addRow("Device", self.device)
        form.addRow("Precision", self.precision)
        # what the highlighted model knows: its classes (the demo: synthetic shapes only)
        self.knowledge = QLabel()
        self.knowledge.setWordWrap(True)
        self.list.currentItemChanged.connect(self._show_knowledge)
        note = QLabel("Registry weights are downloaded once into torch's cache; offline, pick a local file.")
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.list)
        layout.addWidget(self.knowledge)
        layout.addWidget(browse)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(buttons)
        if self.list.count():
            self.list.setCurrentRow(0)
        self.resize(520, 380)

    def _add(self, choice: ModelChoice) -> QListWidgetItem:
        item = QListWidgetItem(choice.title)
        item.setData(Qt.ItemDataRole.UserRole, choice)
        item.setToolTip(choice.name)
        self.list.addItem(item)
        return item

    def _show_knowledge(self, item: QListWidgetItem | None, _previous=None) -> None:
        knowledge = model_knowledge(item.data(Qt.ItemDataRole.UserRole)) if item is not None else ""
        self.knowledge.setText(knowledge.capitalize() if knowledge else "")

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Weights file", "", "Weights (*.safetensors *.pth *.pt)")
        if path:
            self.list.setCurrentItem(self._add(ModelChoice(ModelKind.FILE, path)))

    def selection(self) -> tuple[ModelChoice | None, str]:
        """The model highlighted, with the precision chosen, and the device."""
        item = self.list.currentItem()
        choice = item.data(Qt.ItemDataRole.UserRole) if item else None
        if choice is not None:
            choice = replace(choice, precision=self.precision.currentText())
        return choice, self.device.currentText()


class DownloadProgressDialog(QProgressDialog):
    """The model thread's download of registry weights: "Downloading NAME — X of Y MB" and a
    Cancel button that stops it between chunks. Modal to the window, but shown rather than run
    (``exec``): the event loop goes on, and the dialog goes away when the download ends."""

    def __init__(self, service: ProposalService, parent: QWidget) -> None:
        super().__init__(parent)
        self.setWindowTitle("Downloading weights")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.setAutoReset(False)
        self.setAutoClose(False)
        # the bar is set directly: QProgressDialog.setValue runs the event loop inside the slot
        self.bar = QProgressBar()
        self.setBar(self.bar)
        self._cancelled = False  # reports already on their way after Cancel are dropped
        self.canceled.connect(self._cancel)
        self.service = service
        service.download_progress.connect(self.show_progress)
        service.download_finished.connect(self._finish)
        # QProgressDialog's constructor starts a timer that shows it after minimumDuration (4 s)
        # whether or not anything is in progress; reset() stops that timer
        self.reset()

    def show_progress(self, name: str, done: int, total: int | None) -> None:
        if self._cancelled:
            return
        megabytes = f"{done / 2**20:.1f} of {total / 2**20:.1f} MB" if total else f"{done / 2**20:.1f} MB"
        self.setLabelText(f"Downloading {name} — {megabytes}")
        if total:
            self.bar.setRange(0, 1000)  # per mille: byte counts overflow a Qt int past 2 GB
            self.bar.setValue(done * 1000 // total)
        else:
            self.bar.setRange(0, 0)  # size unknown: a busy bar
        if not self.isVisible():
            self.show()

    def _cancel(self) -> None:
        self._cancelled = True
        self.service.cancel()

    def _finish(self) -> None:
        self._cancelled = False
        self.reset()
        self.hide()
