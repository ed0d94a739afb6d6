"""Choosing the proposal model: published weights from the registry, a local weights file, or a
fine-tuned run of this project; and the device."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QLabel,
                               QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget)
from PySide6.QtCore import Qt

from annotator.gui.proposals import ModelChoice

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")


def runs_dir(project_path: Path) -> Path:
    """Where fine-tuning runs of a project go: ``<project>.runs/`` beside the project file."""
    return project_path.with_name(project_path.name + ".runs")


def registry_choices() -> list[ModelChoice]:
    try:
        from model.weights import REGISTRY  # imports torch: only when the dialog opens
    except Exception:
        return []
    return [ModelChoice("registry", name, f"{name}  ({info.file_size_mb:.0f} MB download once)")
            for name, info in REGISTRY.items()]


def run_choices(project_path: Path | None) -> list[ModelChoice]:
    if project_path is None or not runs_dir(project_path).is_dir():
        return []
    found = []
    for run in sorted(runs_dir(project_path).iterdir(), reverse=True):
        for suffix in WEIGHT_SUFFIXES:
            files = sorted(run.glob(f"*{suffix}")) if run.is_dir() else []
            if files:
                found.append(ModelChoice("run", str(files[-1]), f"fine-tuned: {run.name}"))
                break
    return found


def device_choices() -> list[str]:
    devices = ["auto", "cpu"]
    try:
        import torch

        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except Exception:
        pass
    return devices


class ModelPickerDialog(QDialog):
    def __init__(self, project_path: Path | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Choose the proposal model")
        self.list = QListWidget()
        from annotator.gui.demo import bundled_model

        demo = bundled_model()
        choices = run_choices(project_path) + ([ModelChoice("file", str(demo), "bundled demo model")] if demo else [])
        choices += registry_choices()
        for choice in choices:
            self._add(choice)
        browse = QPushButton("Local weights file…")
        browse.clicked.connect(self._browse)
        self.device = QComboBox()
        self.device.addItems(device_choices())
        form = QFormLayout()
        form.addRow("Device", self.device)
        note = QLabel("Registry weights are downloaded once into torch's cache; offline, pick a local file.")
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.list)
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

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Weights file", "", "Weights (*.safetensors *.pth *.pt)")
        if path:
            self.list.setCurrentItem(self._add(ModelChoice("file", path)))

    def selection(self) -> tuple[ModelChoice | None, str]:
        item = self.list.currentItem()
        return (item.data(Qt.ItemDataRole.UserRole) if item else None), self.device.currentText()
