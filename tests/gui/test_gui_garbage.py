"""Cyclic garbage is collected on the UI thread only (annotator.gui.garbage): a Qt object that
Python's collector destroys on another thread can crash Qt."""

from __future__ import annotations

import gc
import threading

from PySide6.QtCore import QObject, Qt

from annotator.gui.garbage import collect_on_the_ui_thread


def _qt_object_in_a_cycle(destroyed_on: list[str]) -> None:
    holder = QObject()
    holder.itself = holder  # a reference cycle: only the cyclic collector can free it
    holder.destroyed.connect(
        lambda: destroyed_on.append(threading.current_thread().name), Qt.ConnectionType.DirectConnection
    )


def _allocate_on_another_thread() -> list:
    """Objects made on a thread named "worker", far past generation 0's threshold; they are kept,
    so that the count stays past it."""
    kept: list = []
    worker = threading.Thread(target=lambda: kept.extend([] for _ in range(20 * gc.get_threshold()[0])), name="worker")
    worker.start()
    worker.join()
    return kept


def test_a_qt_object_in_a_garbage_cycle_is_destroyed_on_the_ui_thread_not_the_allocating_one(qtbot):
    collect_on_the_ui_thread()
    destroyed_on: list[str] = []
    _qt_object_in_a_cycle(destroyed_on)
    kept = _allocate_on_another_thread()
    assert destroyed_on == []  # the worker's allocations collected nothing
    qtbot.waitUntil(lambda: bool(destroyed_on), timeout=5000)
    assert destroyed_on == [threading.main_thread().name]
    del kept
