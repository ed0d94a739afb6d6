"""Review > Statistics: what labelling has cost in this project (annotator.effort), per model version
and over time, with a plot of the seconds per image and the share of proposals accepted as they
were, in the order images were marked done. A person sees at a glance whether the model is saving
them work. The plot is QtCharts: it comes with PySide6, so the app needs nothing more."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCharts import QChart, QChartView, QLineSeries, QValueAxis
from PySide6.QtCore import Qt
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from annotator.effort import EFFORT_COLUMNS, IDLE_LIMIT_S, EffortRow, effort_by_model, effort_cells, effort_over_time
from annotator.store import Project

# images per row of the "over time" table and per point of the plot
BLOCK = 5


def effort_table_widget(rows: Sequence[EffortRow], first_column: str) -> QTableWidget:
    """``rows`` as a read-only table with the columns of ``annotator.effort.EFFORT_COLUMNS``, the
    first (what a row is about) headed ``first_column``."""
    table = QTableWidget(len(rows), len(EFFORT_COLUMNS))
    table.setHorizontalHeaderLabels([first_column, *EFFORT_COLUMNS[1:]])
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    for r, row in enumerate(rows):
        for c, text in enumerate(effort_cells(row)):
            item = QTableWidgetItem(text)
            if c:
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            table.setItem(r, c, item)
    table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
    table.resizeColumnsToContents()
    return table


def effort_chart(rows: Sequence[EffortRow]) -> QChart:
    """Seconds per image (left axis) and the share accepted as-is (right axis, %) over the images in
    the order they were marked done; each point is one row (a block of images) at its last image."""
    chart = QChart()
    chart.setTitle("Effort over the images marked done")
    seconds, accepted = QLineSeries(name="seconds per image"), QLineSeries(name="accepted as-is (%)")
    done = 0
    for row in rows:
        done += row.images
        seconds.append(done, row.seconds_per_image)
        accepted.append(done, 100 * row.accepted_as_is)
    x_axis = QValueAxis(titleText="images marked done", labelFormat="%d", min=0, max=max(done, 1))
    left = QValueAxis(
        titleText="s / image", labelFormat="%d", min=0, max=max([r.seconds_per_image for r in rows] + [1])
    )
    right = QValueAxis(titleText="as-is %", labelFormat="%d", min=0, max=100)
    for axis in (x_axis, left):
        axis.applyNiceNumbers()  # round ticks (0, 10, 20 ...) instead of fifths of the largest value
    chart.addAxis(x_axis, Qt.AlignmentFlag.AlignBottom)
    chart.addAxis(left, Qt.AlignmentFlag.AlignLeft)
    chart.addAxis(right, Qt.AlignmentFlag.AlignRight)
    for series, axis in ((seconds, left), (accepted, right)):
        chart.addSeries(series)
        series.attachAxis(x_axis)
        series.attachAxis(axis)
    return chart


class StatisticsDialog(QDialog):
    """The effort statistics of ``project``, read when the dialog opens."""

    def __init__(self, project: Project, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Labelling statistics")
        self.by_model = list(effort_by_model(project).values())
        self.over_time = effort_over_time(project, BLOCK)
        layout = QVBoxLayout(self)
        images = sum(row.images for row in self.by_model)
        if not images:
            layout.addWidget(QLabel("No image has been marked done in the app yet: the statistics start there."))
        else:
            layout.addWidget(
                QLabel(
                    f"{images} images marked done. Seconds are active time: pauses over {IDLE_LIMIT_S:.0f} s"
                    " and time in other windows are not counted. Shares are of the labels kept."
                )
            )
            layout.addWidget(QLabel("<b>Per model</b>"))
            self.model_table = effort_table_widget(self.by_model, "model")
            layout.addWidget(self.model_table)
            layout.addWidget(QLabel(f"<b>Over time</b> (each {BLOCK} images in the order they were marked done)"))
            self.time_table = effort_table_widget(self.over_time, "images")
            layout.addWidget(self.time_table)
            self.chart_view = QChartView(effort_chart(self.over_time))
            self.chart_view.setRenderHint(QPainter.RenderHint.Antialiasing)
            self.chart_view.setMinimumHeight(260)
            layout.addWidget(self.chart_view)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(760, 720)
