"""Short jobs off the UI thread (decoding images, thumbnails, scanning folders) on Qt's global
thread pool, with the result handed back on the UI thread."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal


class _Relay(QObject):
    """Lives on the UI thread; its signals, emitted from a pool thread, arrive there queued."""

    done = Signal(object)
    failed = Signal(str)


class _Job(QRunnable):
    def __init__(self, work: Callable[[], Any], relay: _Relay) -> None:
        super().__init__()
        self.work = work
        self.relay = relay

    def run(self) -> None:
        try:
            try:
                result = self.work()
            except Exception as error:  # reported to the UI, never lost in a pool thread
                message = str(error) or type(error).__name__
                if not message.strip():
                    message = traceback.format_exc(limit=1)
                self.relay.failed.emit(message)
            else:
                self.relay.done.emit(result)
        except RuntimeError:  # the UI went away (shutdown) before the result arrived
            pass


_pending: set[_Relay] = set()  # relays stay alive until their result is delivered


def run_in_background(
    work: Callable[[], Any], on_done: Callable[[Any], None], on_error: Callable[[str], None] | None = None
) -> None:
    """Runs ``work()`` on the global thread pool; ``on_done(result)`` or ``on_error(message)``
    is then called on the UI thread."""
    relay = _Relay()
    _pending.add(relay)

    def finish(result: Any) -> None:
        _pending.discard(relay)
        on_done(result)

    def fail(message: str) -> None:
        _pending.discard(relay)
        if on_error is not None:
            on_error(message)

    relay.done.connect(finish)
    relay.failed.connect(fail)
    QThreadPool.globalInstance().start(_Job(work, relay))
