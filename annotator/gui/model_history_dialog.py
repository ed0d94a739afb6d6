"""Model > History: every model of the project (annotator.model_history) with its base, the images
it learned from, its held-out mask AP and the effort measured while it proposed; the selected one
can become the model in use again."""

from __future__ import annotations

import time

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from annotator.effort import effort_by_model
from annotator.model_history import weights_of
from annotator.store import Project

COLUMNS = ("", "model", "from", "images", "made", "held-out AP", "as-is", "s/image")


class ModelHistoryDialog(QDialog):
    use_requested = Signal(str)  # weights (a path or a registry name) of the model to switch to

    def __init__(self, project: Project, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Model history")
        self.project = project
        self.records = project.model_history()
        effort = effort_by_model(project)
        self.table = QTableWidget(len(self.records), len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        for row, record in enumerate(self.records):
            used = effort.get(record.version)
            cells = (
                "●" if record.version == project.model_in_use else "",
                record.version,
                record.base or "start",
                str(record.trained_on),
                time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created_at)),
                "" if record.held_out_ap is None else f"{100 * record.held_out_ap:.1f}",
                "" if used is None else f"{100 * used.accepted_as_is:.0f}%",
                "" if used is None else f"{used.seconds_per_image:.1f}",
            )
            for column, text in enumerate(cells):
                self.table.setItem(row, column, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.use_button = QPushButton("Use this model")
        self.use_button.clicked.connect(self._use)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.addButton(self.use_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(820, 360)

    def _use(self) -> None:
        row = self.table.currentRow()
        if 0 <= row < len(self.records):
            self.use_requested.emit(weights_of(self.project, self.records[row]))
            self.accept()
