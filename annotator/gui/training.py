"""Fine-tuning as a child process: ``main.py train`` prints one JSON object a line, each with an
``event`` field (``progress``, ``eval``, ``checkpoint``, ``done``, ``error``). A reader thread turns
lines into signals; cancel ends the whole process tree (the child runs in its own process group,
so data-loader workers and a ``torchrun`` launcher's children go with it)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from annotator.learning import parse_event, start_child


class TrainingProcess(QObject):
    event = Signal(dict)
    log = Signal(str)  # output lines that are not events
    finished = Signal(int)  # exit status; negative: killed by that signal

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.process: subprocess.Popen | None = None
        self.cancelled = False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, command: list[str], cwd: Path | None = None) -> None:
        if self.running:
            raise RuntimeError("a training process is already running")
        self.cancelled = False
        self.process = start_child(command, cwd, {**os.environ, "PYTHONUNBUFFERED": "1"})
        threading.Thread(target=self._read, args=(self.process,), daemon=True, name="training-output").start()

    def _read(self, process: subprocess.Popen) -> None:
        try:
            for line in process.stdout:
                event = parse_event(line)
                if event is not None:
                    self.event.emit(event)
                elif line.strip():
                    self.log.emit(line.rstrip())
            self.finished.emit(process.wait())
        except RuntimeError:  # the window closed while the child still wrote
            pass

    def cancel(self, grace_ms: int = 3000) -> None:
        """Asks the process group to stop (SIGTERM), and kills it if still there after ``grace_ms``."""
        if not self.running:
            return
        self.cancelled = True
        process = self.process
        self._signal_group(process, signal.SIGTERM if os.name == "posix" else None)
        QTimer.singleShot(
            grace_ms, lambda: process.poll() is None and self._signal_group(process, getattr(signal, "SIGKILL", None))
        )

    @staticmethod
    def _signal_group(process: subprocess.Popen, sig) -> None:
        try:
            if os.name == "posix":
                os.killpg(process.pid, sig)
            else:
                subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True)
        except ProcessLookupError:
            pass
