"""File > Open recent: the projects opened last, newest first, kept in the settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QSettings
from PySide6.QtWidgets import QMenu, QWidget

MAX_RECENT = 10


class RecentProjects(QObject):
    """The menu (``menu``) and the list behind it. ``open_path`` opens a project; ``error(title,
    text)`` says that one has gone."""

    def __init__(
        self,
        parent: QWidget,
        settings: QSettings,
        open_path: Callable[[Path], None],
        error: Callable[[str, str], None],
    ) -> None:
        super().__init__(parent)
        self.settings, self.open_path, self.error = settings, open_path, error
        self.menu = QMenu("Open &recent", parent)
        self.rebuild_menu()

    def paths(self) -> list[str]:
        value = self.settings.value("recent/projects", [])
        return [value] if isinstance(value, str) else list(value or [])

    def remember(self, path: Path) -> None:
        recent = [str(path.resolve())] + [p for p in self.paths() if p != str(path.resolve())]
        self.settings.setValue("recent/projects", recent[:MAX_RECENT])
        self.rebuild_menu()

    def rebuild_menu(self) -> None:
        self.menu.clear()
        for path in self.paths():
            action = self.menu.addAction(path)
            action.triggered.connect(lambda checked=False, p=path: self._open(Path(p)))
        self.menu.setEnabled(bool(self.paths()))

    def _open(self, path: Path) -> None:
        if not path.exists():  # deleted or moved since: it leaves the menu, as editors do
            self.settings.setValue("recent/projects", [p for p in self.paths() if p != str(path)])
            self.rebuild_menu()
            self.error("Open", f"{path}: not there any more; removed from the recent projects")
            return
        self.open_path(path)
