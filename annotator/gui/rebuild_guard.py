"""Rebuilding an item view from inside one of its own item signals, safely.

A panel that clears and refills its QTreeWidget or QListWidget when the session changes must not
do so while Qt is still delivering a click to one of its items: a Show or Lock check box toggled
in the Instances list emits ``itemChanged`` from inside the item's ``setData``, the session's
change asked the panel to rebuild, ``clear()`` deleted the item, and Qt went on using it — the app
ended with a segmentation fault about one click in three. While a :class:`RebuildGuard` is held
(around the panel's handling of its own item signals) the rebuild waits for the event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from PySide6.QtCore import QObject, QTimer


class RebuildGuard:
    """Defers ``rebuild`` (the panel's reload) while :meth:`held`; deferred calls coalesce into one."""

    def __init__(self, owner: QObject, rebuild: Callable[[], None]) -> None:
        self.active = False
        # owned by the panel: it dies with it, so a deferred rebuild never reaches a deleted panel
        self._later = QTimer(owner)
        self._later.setSingleShot(True)
        self._later.setInterval(0)
        self._later.timeout.connect(rebuild)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Around the handling of one of the view's own item signals."""
        self.active, was = True, self.active
        try:
            yield
        finally:
            self.active = was

    def must_wait(self) -> bool:
        """Called first thing in the rebuild: True (and the rebuild scheduled for when the event loop
        is back) while the guard is held; the caller then returns without touching its items."""
        if self.active:
            self._later.start()
        return self.active
