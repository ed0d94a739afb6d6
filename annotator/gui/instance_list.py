"""The instances of the current image: category, score, source, visibility and lock, with the
proposal score threshold and the accept / reject buttons."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from annotator.gui.rebuild_guard import RebuildGuard
from annotator.gui.session import Session
from annotator.store import Source

COLUMNS = ("#", "Category", "Score", "Source", "Show", "Lock")


def provenance(instance) -> str:
    """The Source column: "proposal" (the model's, not reviewed), "accepted" (a proposal a person
    kept), "from box" (the model's mask for a box a person drew) or "drawn" (a person's own,
    drawn or imported)."""
    if instance.source == Source.MODEL:
        return "proposal"
    if instance.model_version:
        return "accepted" if instance.score is not None else "from box"
    return "drawn"


def color_icon(color: str, side: int = 12) -> QIcon:
    pixmap = QPixmap(side, side)
    pixmap.fill(QColor(color))
    return QIcon(pixmap)


class InstanceListPanel(QWidget):
    accept_requested = Signal()
    reject_requested = Signal()
    accept_all_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session: Session | None = None
        self.tree = QTreeWidget()
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.tree.setUniformRowHeights(True)
        for column, width in enumerate((30, 90, 42, 50, 38, 34)):
            self.tree.setColumnWidth(column, width)
        self.tree.itemSelectionChanged.connect(self._selection_from_tree)
        self.tree.itemChanged.connect(self._item_changed)

        self.threshold = QSlider(Qt.Orientation.Horizontal)
        self.threshold.setRange(0, 100)
        self.threshold.setValue(50)
        self.threshold.setToolTip("Show proposals with at least this score (no new model run)")
        self.threshold_label = QLabel("≥ 0.50")
        self.threshold.valueChanged.connect(self._threshold_changed)
        self.accept_button = QPushButton("Accept")
        self.accept_button.setToolTip("Accept the selected proposals (Enter)")
        self.reject_button = QPushButton("Reject")
        self.reject_button.setToolTip("Delete the selected instances (Delete)")
        self.accept_all_button = QPushButton("Accept all ≥ threshold")
        self.accept_button.clicked.connect(self.accept_requested)
        self.reject_button.clicked.connect(self.reject_requested)
        self.accept_all_button.clicked.connect(self.accept_all_requested)

        threshold_row = QHBoxLayout()
        threshold_row.addWidget(QLabel("Score"))
        threshold_row.addWidget(self.threshold, 1)
        threshold_row.addWidget(self.threshold_label)
        buttons = QHBoxLayout()
        buttons.addWidget(self.accept_button)
        buttons.addWidget(self.reject_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(threshold_row)
        layout.addLayout(buttons)
        layout.addWidget(self.accept_all_button)
        layout.addWidget(self.tree)
        self._updating = False
        self._guard = RebuildGuard(self, self.reload)  # the Show / Lock check boxes rebuild the list

    def set_session(self, session: Session | None) -> None:
        self.session = session
        if session is not None:
            session.instances_changed.connect(self._instances_changed)
            session.image_changed.connect(lambda _: self.reload())
            session.selection_changed.connect(self._selection_from_session)
            session.view_state_changed.connect(self.reload)
            session.categories_changed.connect(self.reload)
            self.threshold.setValue(round(session.view.score_threshold * 100))
        self.reload()

    def _instances_changed(self, image_id: int) -> None:
        if self.session is not None and image_id == self.session.image_id:
            self.reload()

    def reload(self) -> None:
        if self._guard.must_wait():
            return
        self._updating = True
        self.tree.clear()
        if self.session is not None:
            categories = {c.id: c for c in self.session.project.categories()}
            for instance in self.session.instances():
                category = categories.get(instance.category_id)
                below = not self.session.view.passes_threshold(instance)
                item = QTreeWidgetItem(
                    [
                        str(instance.id),
                        category.name if category else "?",
                        "" if instance.score is None else f"{instance.score:.2f}",
                        provenance(instance),
                        "",
                        "",
                    ]
                )
                item.setData(0, Qt.ItemDataRole.UserRole, instance.id)
                if category is not None:
                    item.setIcon(1, color_icon(category.color))
                item.setCheckState(
                    4, Qt.CheckState.Unchecked if instance.id in self.session.view.hidden else Qt.CheckState.Checked
                )
                item.setCheckState(
                    5, Qt.CheckState.Checked if instance.id in self.session.view.locked else Qt.CheckState.Unchecked
                )
                if below:
                    for column in range(len(COLUMNS)):
                        item.setForeground(column, QColor(130, 130, 130))
                    item.setToolTip(2, "under the score threshold: not drawn")
                self.tree.addTopLevelItem(item)
                if instance.id in self.session.selection:
                    item.setSelected(True)
        self._updating = False

    def _item_changed(self, item: QTreeWidgetItem, column: int) -> None:
        if self._updating or self.session is None:
            return
        instance_id = item.data(0, Qt.ItemDataRole.UserRole)
        with self._guard.held():  # Qt still holds ``item``: the list is rebuilt after this returns
            if column == 4:
                self.session.set_hidden(instance_id, item.checkState(4) != Qt.CheckState.Checked)
            elif column == 5:
                self.session.set_locked(instance_id, item.checkState(5) == Qt.CheckState.Checked)

    def _selection_from_tree(self) -> None:
        if self._updating or self.session is None:
            return
        ids = [item.data(0, Qt.ItemDataRole.UserRole) for item in self.tree.selectedItems()]
        self.session.select(ids)

    def _selection_from_session(self, ids: list) -> None:
        self._updating = True
        for index in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(index)
            item.setSelected(item.data(0, Qt.ItemDataRole.UserRole) in ids)
            if item.isSelected():
                self.tree.scrollToItem(item)
        self._updating = False

    def _threshold_changed(self, value: int) -> None:
        self.threshold_label.setText(f"≥ {value / 100:.2f}")
        if self.session is not None:
            self.session.set_score_threshold(value / 100)
