"""Active time per image, measured as a person works: the window's input events (keys, mouse,
wheel, while it is the active window) go to an :class:`annotator.effort.ActiveTime` clock, and its
seconds are added to the image shown when they were spent (``Project.add_active_seconds``). Idle
gaps over a minute, time with the window in the background and the time until the first input on
a newly shown image do not count, nor the time spent on a project that can only be read
(annotator.gui.read_only: the seconds are dropped rather than refused every 15 s)."""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication, QWidget

from annotator.effort import ActiveTime
from annotator.gui.session import Session

INPUT_EVENTS = frozenset(
    {
        QEvent.Type.KeyPress,
        QEvent.Type.MouseButtonPress,
        QEvent.Type.MouseButtonRelease,
        QEvent.Type.MouseMove,
        QEvent.Type.Wheel,
    }
)
# pending seconds are written to the project this often (ms), so a crash loses at most this much
FLUSH_INTERVAL_MS = 15_000


class ActivityMeter(QObject):
    """Counts the active seconds of ``window``'s person on the image ``session_source()`` shows."""

    def __init__(self, window: QWidget, session_source: Callable[[], Session | None]) -> None:
        super().__init__(window)
        self.window = window
        self.session_source = session_source
        self.clock = ActiveTime()
        self._session: Session | None = None
        self._image_id = 0
        self.pending = 0.0  # seconds on _image_id not yet written
        QApplication.instance().installEventFilter(self)
        self._timer = QTimer(self, interval=FLUSH_INTERVAL_MS, timeout=self.flush)
        self._timer.start()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        kind = event.type()
        if kind in INPUT_EVENTS:
            if self.window.isActiveWindow():
                self.input(time.monotonic())
        elif kind == QEvent.Type.ApplicationDeactivate:
            self.clock.pause()
        return False

    def input(self, now: float) -> None:
        """An input at ``now`` (monotonic seconds), for the image shown now."""
        session = self.session_source()
        image_id = session.image_id if session is not None else 0
        if session is not self._session or image_id != self._image_id:
            self.flush()
            self._session, self._image_id = session, image_id
            self.clock.pause()
        if image_id:
            self.pending += self.clock.input(now)

    def flush(self) -> None:
        """Writes the pending seconds to the project (call before the project closes)."""
        seconds, self.pending = self.pending, 0.0
        session = self._session
        if seconds > 0 and session is not None and self._image_id and not session.project.read_only:
            session.project.add_active_seconds(self._image_id, seconds)

    def release(self) -> None:
        """Flushes and forgets the session: its project is about to close."""
        self.flush()
        self._session, self._image_id = None, 0

    def stop(self) -> None:
        """Releases the session and stops listening (the window closes)."""
        self.release()
        self._timer.stop()
        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self)
