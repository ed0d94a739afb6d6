"""Another program changing the project while the window shows it (issue 17): a second window, a
script's ``main.py import`` or ``propose``. SQLite's ``PRAGMA data_version``
(``Project.data_version``) changes when another connection commits to the file; the window asks it
every :data:`POLL_INTERVAL_MS` and, when it changed, reads again what it shows: the image list's
states, the instance list, the canvas and the categories, keeping the selection where the selected
instances still exist (``Session.changed_elsewhere``). It also asks as the canvas gets a press,
before the tool acts on it, so that a stroke never starts on an instance that is gone.

Nothing is written from what the window shows: each edit reads the store inside its transaction,
and an undo or redo step that would write over what the other program changed is refused in one
status-bar line (annotator.commands.EditConflict) instead of overwriting it.

The poll runs whenever a project is open, the window active or not: the question costs
microseconds (SQLite reads no page of the file for it), and a person often watches the window while
the other program runs in a terminal that has the focus; a window that went on showing what is no
longer there would have them edit what they cannot see."""

from __future__ import annotations

import sqlite3

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QMainWindow

from annotator.gui import unavailable
from annotator.store import Project
from model.errors import InputError

POLL_INTERVAL_MS = 1000


class ProjectWatch(QObject):
    """Shows in ``window`` (annotator.gui.main_window.MainWindow) what other programs write to its
    project; call :meth:`project_opened` as a project opens."""

    def __init__(self, window: QMainWindow) -> None:
        super().__init__(window)
        self.window = window
        self._project: Project | None = None
        self._version = 0
        self._timer = QTimer(self, interval=POLL_INTERVAL_MS, timeout=self.poll)
        self._timer.start()
        window.canvas.installEventFilter(self)

    def project_opened(self, project: Project) -> None:
        """What the window reads of ``project`` from now on is up to date."""
        self._project, self._version = project, project.data_version()

    def poll(self) -> bool:
        """Shows the changes another program committed since the last poll; returns whether any."""
        session = self.window.session
        if session is None or session.project is not self._project:
            return False
        try:
            version = self._project.data_version()
        except sqlite3.Error:  # asked again at the next poll
            return False
        if version == self._version:
            return False
        self._version = version
        self.show_changes()
        return True

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() in (QEvent.Type.MouseButtonPress, QEvent.Type.KeyPress):
            self.poll()  # the tool then acts on what is there now
        return False

    def show_changes(self) -> None:
        """Reads again what the window shows, after a change made outside its history (another
        program's, or an import's)."""
        session = self.window.session
        if session is None:
            return
        session.changed_elsewhere()
        images = self.window.images
        if images.model.refresh_all():
            images.show_current(session.image_id)
        images.update_counts()

    def step_history(self, forward: bool) -> None:
        """Edit > Undo (``forward`` False) or Redo, said in the status bar; a step refused
        (another program changed what it would write, or the project is busy) is said in one line."""
        session = self.window.session
        if session is None:
            self.window.status.showMessage(unavailable.NO_PROJECT, unavailable.MESSAGE_MS)
            return
        try:
            command = session.redo() if forward else session.undo()
        except InputError as error:
            self.window.status.showMessage(str(error), 10000)
            return
        if command is not None:
            self.window.status.showMessage(f"{'Redid' if forward else 'Undid'}: {command.text}", 3000)
        else:
            nothing = unavailable.NOTHING_TO_REDO if forward else unavailable.NOTHING_TO_UNDO
            self.window.status.showMessage(nothing, unavailable.MESSAGE_MS)
