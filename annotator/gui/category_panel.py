"""Categories: the current one (what new instances get), add, rename, colour, and the keypoint
names and skeleton of each."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QColorDialog,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from annotator.gui.instance_list import color_icon
from annotator.gui.rebuild_guard import RebuildGuard
from annotator.gui.session import Session
from annotator.store import Category, Source, default_color


def parse_skeleton(text: str, names: list[str]) -> list[tuple[int, int]]:
    """Skeleton edges, one a line as ``a - b`` where a and b are keypoint names or 1-based numbers."""
    edges = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = [p.strip() for p in line.replace(",", "-").split("-")]
        if len(parts) != 2:
            raise ValueError(f"skeleton line {number}: write two keypoints as 'a - b'")
        edge = []
        for part in parts:
            if part.isdigit():
                edge.append(int(part))
            elif part in names:
                edge.append(names.index(part) + 1)
            else:
                raise ValueError(f"skeleton line {number}: no keypoint '{part}'")
        edges.append((edge[0], edge[1]))
    return edges


class CategoryDialog(QDialog):
    """Edits one category's name, colour, keypoint names (one a line) and skeleton."""

    def __init__(self, category: Category | None, next_id: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Edit category" if category else "New category")
        self.name = QLineEdit(category.name if category else "")
        self.color = QColor(category.color if category else default_color(next_id))
        self.color_button = QPushButton()
        self.color_button.clicked.connect(self._pick_color)
        self._show_color()
        self.keypoints = QPlainTextEdit("\n".join(category.keypoints) if category else "")
        self.keypoints.setPlaceholderText("one keypoint name a line, e.g.\nhead\ntail")
        names = list(category.keypoints) if category else []
        self.skeleton = QPlainTextEdit(
            "\n".join(f"{names[a - 1]} - {names[b - 1]}" for a, b in category.skeleton) if category else ""
        )
        self.skeleton.setPlaceholderText("one edge a line: head - tail (names or numbers)")
        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Colour", self.color_button)
        form.addRow("Keypoints", self.keypoints)
        form.addRow("Skeleton", self.skeleton)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def _show_color(self) -> None:
        self.color_button.setText(self.color.name())
        self.color_button.setIcon(color_icon(self.color.name(), 16))

    def _pick_color(self) -> None:
        color = QColorDialog.getColor(self.color, self, "Category colour")
        if color.isValid():
            self.color = color
            self._show_color()

    def values(self) -> dict:
        """The edited fields; raises ValueError for a bad skeleton."""
        names = [line.strip() for line in self.keypoints.toPlainText().splitlines() if line.strip()]
        return {
            "name": self.name.text().strip(),
            "color": self.color.name(),
            "keypoints": names,
            "skeleton": parse_skeleton(self.skeleton.toPlainText(), names),
        }


class CategoryPanel(QWidget):
    status_message = Signal(str)  # a line for the status bar

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session: Session | None = None
        self.list = QListWidget()
        self.list.currentItemChanged.connect(self._current_changed)
        self.list.itemDoubleClicked.connect(lambda item: self.edit_category())
        add = QPushButton("Add")
        add.clicked.connect(self.add_category)
        edit = QPushButton("Edit")
        edit.clicked.connect(self.edit_category)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setToolTip("Delete the category, or merge it into another: its labels move there")
        self.delete_button.clicked.connect(self.delete_category)
        row = QHBoxLayout()
        row.addWidget(add)
        row.addWidget(edit)
        row.addWidget(self.delete_button)
        # an empty list says how categories come: the model's classes join only once a label is kept
        self.empty_note = QLabel("No category yet: add one, or accept a proposal and its class becomes one.")
        self.empty_note.setWordWrap(True)
        self.empty_note.setEnabled(False)  # greyed, as a hint
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.empty_note)
        layout.addWidget(self.list)
        layout.addLayout(row)
        self._updating = False
        self._guard = RebuildGuard(self, self.reload)  # a click on a category makes it current: a rebuild
        # Counting instances per category scans the whole project (tens of ms at a million
        # instances): after edits, recount once the user pauses rather than on every stroke.
        self._recount = QTimer(self)
        self._recount.setSingleShot(True)
        self._recount.setInterval(400)
        self._recount.timeout.connect(self.reload)

    def set_session(self, session: Session | None) -> None:
        self.session = session
        if session is not None:
            session.categories_changed.connect(self.reload)
            session.instances_changed.connect(lambda _: self._recount.start())
            session.current_category_changed.connect(lambda _: self.reload())
        self.reload()

    def reload(self) -> None:
        if self._guard.must_wait():
            return
        self._updating = True
        self.list.clear()
        if self.session is not None:
            project = self.session.project
            # the labels people kept, as an export writes them; proposals are drafts until accepted,
            # and a category only the model proposed is not listed until one of its labels is kept
            kept = project.instance_counts_by_category(Source.HUMAN)
            for category in project.kept_categories():
                count = kept.get(category.id, 0)
                details = f"{count} instance" + ("" if count == 1 else "s")
                if category.keypoints:
                    details += f", {category.num_keypoints} keypoints"
                item = QListWidgetItem(color_icon(category.color), f"{category.name}  ({details})")
                item.setData(Qt.ItemDataRole.UserRole, category.id)
                self.list.addItem(item)
                if category.id == self.session.current_category_id:
                    self.list.setCurrentItem(item)
        self.empty_note.setVisible(self.session is not None and self.list.count() == 0)
        self._updating = False

    def _current_changed(self, item: QListWidgetItem | None, _previous) -> None:
        if self._updating or item is None or self.session is None:
            return
        with self._guard.held():  # Qt is still changing the current item: the list is rebuilt after
            self.session.set_current_category(item.data(Qt.ItemDataRole.UserRole))

    def _run_dialog(self, category: Category | None, save: Callable[[dict], Category]) -> Category | None:
        """Shows the dialog until ``save`` takes its values (the saved category is returned) or the
        user cancels; a refusal (a bad skeleton, a name in use) is shown and the dialog comes back
        with what was typed."""
        next_id = max((c.id for c in self.session.project.categories()), default=0) + 1
        dialog = CategoryDialog(category, next_id, self)
        while dialog.exec() == QDialog.DialogCode.Accepted:
            try:
                return save(dialog.values())
            except ValueError as error:
                QMessageBox.warning(self, "Category", f"Not saved: {error}")
        return None

    def add_category(self) -> None:
        if self.session is None:
            return
        added = self._run_dialog(None, lambda values: self.session.project.add_category(**values))
        if added is None:
            return
        self.session.current_category_id = added.id
        self.session.notify_categories()
        self.session.current_category_changed.emit(added.id)

    def edit_category(self) -> None:
        if self.session is None or self.session.current_category is None:
            return
        category_id = self.session.current_category_id
        if self._run_dialog(
            self.session.current_category, lambda values: self.session.project.update_category(category_id, **values)
        ):
            self.session.notify_categories()

    def delete_category(self) -> None:
        """Deletes the current category: an unused one after a confirmation; one in use by merging
        it into another category the person picks (its labels and proposals move there). One undo
        step either way."""
        session = self.session
        category = session.current_category if session is not None else None
        if category is None:
            return
        used = session.project.instance_counts_by_category().get(category.id, 0)
        move_to = None
        if not used:
            answer = QMessageBox.question(self, "Delete category", f"Delete the category '{category.name}'?")
            if answer != QMessageBox.StandardButton.Yes:
                return
        else:
            others = [c for c in session.project.kept_categories() if c.id != category.id]
            if not others:
                QMessageBox.warning(
                    self, "Delete category", f"{used} instances are '{category.name}', the only category"
                )
                return
            name, chosen = QInputDialog.getItem(
                self,
                "Merge category",
                f"{used} instances are '{category.name}'. Move them to:",
                [c.name for c in others],
                0,
                False,
            )
            if not chosen:
                return
            move_to = next(c.id for c in others if c.name == name)
        command = session.history.delete_category(category.id, move_to)
        self.status_message.emit(f"{command.text} (undo with Ctrl+Z)")
