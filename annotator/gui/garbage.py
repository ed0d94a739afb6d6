"""Python's cyclic garbage collection, run on the UI thread only.

Python collects reference cycles on whichever thread happens to allocate when a generation's
count passes its threshold. The app runs Python on other threads: the model thread builds models
and runs inference, the thread pool decodes images. A Qt object held only by a cycle (a closed
dialog and the lambdas connected to its signals, say) was then destroyed on one of those threads,
and Qt crashed in the UI thread's event loop afterwards: a segmentation fault, seen when the model
thread built a model after a fine-tuning dialog had closed. So automatic collection is switched
off and the UI thread collects on a timer, generation by generation, as often as the automatic
thresholds would have.

A collection of the oldest generation walks every object Python tracks: with torch imported and
a model loaded that is some 370,000 objects and 190 ms, a visible stall on the UI thread. What is
alive when the collector starts and when a model has loaded (modules, the model) lives as long as
the app, so it is frozen (``gc.freeze``): out of the collector's sight, still freed by reference
counting, and the oldest generation's collections stay cheap.
"""

from __future__ import annotations

import atexit
import gc

from PySide6.QtCore import QCoreApplication, QObject, QTimer

CHECK_INTERVAL_MS = 200


class MainThreadCollector(QObject):
    """Does what automatic collection would (``gc.get_threshold()``), from a timer on the thread
    that made it."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.thresholds = gc.get_threshold()
        gc.disable()
        self.freeze()
        # frozen objects are not collected at exit either, and extension modules complain of leaks
        # (nanobind: "leaked 4 instances!"): hand them back before Python shuts down
        atexit.register(gc.unfreeze)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.collect_due)
        self.timer.start(CHECK_INTERVAL_MS)

    def collect_due(self) -> None:
        """What Python does when generation 0's count (allocations less frees since it was last
        collected) passes its threshold: collect the oldest generation whose count (collections of
        the generation below since its own) has passed its threshold too."""
        counts = gc.get_count()
        if counts[0] <= self.thresholds[0]:
            return
        gc.collect(next(g for g in (2, 1, 0) if counts[g] > self.thresholds[g]))

    def freeze(self) -> None:
        """Puts every object alive now out of the collector's sight (see the module's notes)."""
        gc.freeze()


def collect_on_the_ui_thread() -> MainThreadCollector:
    """The application's collector, made on first call (on the UI thread, which owns the
    application object) and kept as its child."""
    app = QCoreApplication.instance()
    collector = app.findChild(MainThreadCollector)
    if collector is None:
        collector = MainThreadCollector(app)
    return collector
