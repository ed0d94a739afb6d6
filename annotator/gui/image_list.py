"""The image list: thumbnails, file names and review states, filtered by review state."""

from __future__ import annotations

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QComboBox, QListView, QVBoxLayout, QWidget

from annotator.gui.session import Session
from annotator.gui.thumbnails import THUMBNAIL_SIDE, ThumbnailCache
from annotator.learning import image_doubts, image_uncertainty, least_sure_next
from annotator.store import ImageRecord, ReviewState, Source

STATE_COLORS = {
    ReviewState.UNLABELED: QColor("#9e9e9e"),
    ReviewState.PROPOSED: QColor("#1f77b4"),
    ReviewState.IN_REVIEW: QColor("#ff7f0e"),
    ReviewState.DONE: QColor("#2ca02c"),
}
FILTERS: list[tuple[str, ReviewState | None]] = [
    ("All", None),
    ("Unlabeled", ReviewState.UNLABELED),
    ("Proposed", ReviewState.PROPOSED),
    ("In review", ReviewState.IN_REVIEW),
    ("Done", ReviewState.DONE),
]


class ImageListModel(QAbstractListModel):
    def __init__(self, thumbnails: ThumbnailCache) -> None:
        super().__init__()
        self.session: Session | None = None
        self.records: list[ImageRecord] = []
        self.state_filter: ReviewState | None = None
        self.thumbnails = thumbnails
        self.least_sure_first = False  # Review > Least sure image first: proposed images by doubt
        self.doubts: dict[int, float] = {}  # annotator.learning.image_doubts of the proposed images
        self._row_of: dict[int, int] = {}
        thumbnails.ready.connect(self._thumbnail_ready)

    def reload(self) -> None:
        self.beginResetModel()
        self.records = self.session.project.images(self.state_filter) if self.session else []
        self.doubts = image_doubts(self.session.project) if self.session else {}
        if self.least_sure_first:  # the least sure first, then the rest in list order
            self.records.sort(key=lambda record: -self.doubts.get(record.id, -1.0))
        self._row_of = {record.id: row for row, record in enumerate(self.records)}
        self.endResetModel()

    def refresh_all(self) -> bool:
        """Reads the images' review states again (another program changed the project): while the
        list holds the same images in the same order, the rows whose state changed are redrawn in
        place, so the view keeps its scroll and current row; else it is rebuilt. Returns whether it
        was rebuilt."""
        states = self.session.project.image_states(self.state_filter) if self.session else []
        if self.least_sure_first or [image_id for image_id, _ in states] != [r.id for r in self.records]:
            self.reload()
            return True
        for (image_id, state), record in zip(states, self.records, strict=True):
            if state != record.state:
                self.refresh_image(image_id)
        return False

    def refresh_image(self, image_id: int) -> None:
        row = self._row_of.get(image_id)
        if row is None or self.session is None:
            return
        self.records[row] = self.session.project.image(image_id)
        if self.records[row].state == ReviewState.PROPOSED:
            self.doubts[image_id] = image_uncertainty(
                [i.score for i in self.session.project.instances(image_id) if i.source == Source.MODEL]
            )
        else:
            self.doubts.pop(image_id, None)
        index = self.index(row)
        self.dataChanged.emit(index, index)

    def row_of(self, image_id: int) -> int:
        return self._row_of.get(image_id, -1)

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.records)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or self.session is None or index.row() >= len(self.records):
            return None
        record = self.records[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            doubt = self.doubts.get(record.id)
            unsure = f" · unsure {100 * doubt:.0f}%" if doubt is not None else ""
            return f"{record.file_name}\n{record.state.label}{unsure}"
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{record.file_name}\n{record.width} x {record.height}\n{record.state.label}"
        if role == Qt.ItemDataRole.DecorationRole:
            image = self.thumbnails.get(record.id, self.session.project.image_path(record))
            return self._decorated(image, record.state)
        if role == Qt.ItemDataRole.UserRole:
            return record.id
        return None

    def _decorated(self, image: QImage | None, state: ReviewState) -> QPixmap:
        """The thumbnail centred in a square, with a bar in the review state's colour on its left."""
        pixmap = QPixmap(THUMBNAIL_SIDE, THUMBNAIL_SIDE)
        pixmap.fill(QColor(0, 0, 0, 0))
        painter = QPainter(pixmap)
        if image is None or image.isNull():
            painter.fillRect(pixmap.rect(), QColor(80, 80, 80))
        else:
            painter.drawImage((THUMBNAIL_SIDE - image.width()) // 2, (THUMBNAIL_SIDE - image.height()) // 2, image)
        painter.fillRect(0, 0, 6, THUMBNAIL_SIDE, STATE_COLORS[state])
        painter.end()
        return pixmap

    def _thumbnail_ready(self, image_id: int) -> None:
        row = self._row_of.get(image_id)
        if row is not None:
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])


class ImageListPanel(QWidget):
    image_activated = Signal(int)  # image id

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.thumbnails = ThumbnailCache(self)
        self.model = ImageListModel(self.thumbnails)
        self.filter = QComboBox()
        self.filter.setToolTip("Show images in one review state")
        for label, _ in FILTERS:
            self.filter.addItem(label)
        self.filter.currentIndexChanged.connect(self._filter_changed)
        self.view = QListView()
        self.view.setModel(self.model)
        self.view.setIconSize(QSize(THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        self.view.setUniformItemSizes(True)  # lets the view lay out 100,000 rows without asking each
        self.view.setSpacing(2)
        self.view.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.view.selectionModel().currentChanged.connect(self._current_changed)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.filter)
        layout.addWidget(self.view)
        self.session: Session | None = None
        self._following_session = False  # True while the list follows the session's image

    def set_session(self, session: Session | None) -> None:
        self.session = session
        self.model.session = session
        self.thumbnails.clear()
        if session is not None:
            session.review_state_changed.connect(self._state_changed)
            session.image_changed.connect(self.show_current)
        self.model.reload()
        self.update_counts()

    def update_counts(self) -> None:
        counts = self.session.project.review_state_counts() if self.session else {}
        total = sum(counts.values())
        for index, (label, state) in enumerate(FILTERS):
            count = total if state is None else counts.get(state, 0)
            self.filter.setItemText(index, f"{label} ({count})")

    def set_filter(self, state: ReviewState | None) -> None:
        self.filter.setCurrentIndex([s for _, s in FILTERS].index(state))

    def _filter_changed(self, index: int) -> None:
        self.model.state_filter = FILTERS[index][1]
        self.model.reload()
        if self.session is not None:
            self.show_current(self.session.image_id)

    def _state_changed(self, image_id: int) -> None:
        self.update_counts()
        self.model.refresh_image(image_id)

    def show_current(self, image_id: int) -> None:
        row = self.model.row_of(image_id)
        if row >= 0:
            # a guard, not blockSignals: the view repaints the row it deselects from those signals
            self._following_session = True
            self.view.setCurrentIndex(self.model.index(row))
            self._following_session = False
            self.view.scrollTo(self.model.index(row))

    def _current_changed(self, current: QModelIndex, previous: QModelIndex) -> None:
        if current.isValid() and not self._following_session:
            self.image_activated.emit(current.data(Qt.ItemDataRole.UserRole))

    def set_least_sure_first(self, on: bool) -> None:
        """Review > Least sure image first: the list sorts the proposed images by how unsure the
        model is of them, and "Done, next" goes to the least sure (list order otherwise)."""
        self.model.least_sure_first = on
        self.model.reload()
        if self.session is not None:
            self.show_current(self.session.image_id)

    def next_to_review(self, image_id: int) -> int:
        """The image "Done, next" goes to, in the order the person chose."""
        if self.session is None:
            return 0
        if self.model.least_sure_first:
            return least_sure_next(self.session.project, image_id, self.session.view.score_threshold)
        return self.session.review.next_to_review(image_id)

    def visible_ids(self) -> list[int]:
        return [record.id for record in self.model.records]
