"""Fine-tuning as a child process: ``main.py train`` prints one JSON object a line, each with an
``event`` field (``progress``, ``eval``, ``checkpoint``, ``done``, ``error``). A reader thread turns
lines into signals; cancel ends the whole process tree (the child runs in its own process group,
so data-loader workers and a ``torchrun`` launcher's children go with it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

MAIN_PY = Path(__file__).resolve().parents[2] / "main.py"


@dataclass(frozen=True)
class TrainingRequest:
    base_weights: str  # registry name or weights file
    epochs: int
    val_fraction: float  # fraction of the done images held out for evaluation
    device: str
    run_dir: Path


def train_command(request: TrainingRequest, coco_file: Path, image_root: Path) -> list[str]:
    """The command line of ``main.py train`` for a request. Its events: ``progress`` (iteration,
    total, epoch, loss, each loss term, lr, eta_s), ``eval`` (stage ``before`` / ``during`` /
    ``after``; ``bbox``, ``segm``, ``keypoints`` each with ``AP`` as a fraction), ``checkpoint``
    (path), ``done`` (path of the final weights), ``error`` (message)."""
    return [
        sys.executable,
        "-u",
        str(MAIN_PY),
        "train",
        str(coco_file),
        "--images",
        str(image_root),
        "--weights",
        request.base_weights,
        "--epochs",
        str(request.epochs),
        "--val-fraction",
        f"{request.val_fraction:g}",
        "--device",
        request.device,
        "--out",
        str(request.run_dir),
        "--log-period",
        "1",
    ]  # a point on the loss plot every step: a short run is a line too


def parse_event(line: str) -> dict | None:
    """The event of one output line, or None for a line that is not a JSON event (plain logging)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) and isinstance(value.get("event"), str) else None


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
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        kwargs = (
            {"start_new_session": True}
            if os.name == "posix"
            else {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
        )
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env=environment,
            **kwargs,
        )
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
