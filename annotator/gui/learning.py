"""Model > Learn as I label: after every N images newly marked done, a learning round
(``annotator.learning.learning_round``: ``main.py train`` as a child process at lower priority with
its CPU threads limited, then the held-out comparison) runs in the background from the model in
use. The model it produced goes into the project's history (annotator.model_history); when it is
not worse the app switches to it and re-proposes the images nobody has touched. A person keeps
working throughout; at most one round runs; quitting ends it; a failed round says why in the
status bar and the log and changes nothing.

The round runs on a Python thread with its own connection to the project file (it only reads it);
its outcome comes back to the UI thread through a signal. A model to switch to (a round's, or the
model an opened project was using) waits until the model thread is free: a proposal job the person
started is never refused or cut short for it, and the switch is never lost to it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, Signal

from annotator.gui.session import Session
from annotator.gui.status_bar import StatusBar
from annotator.learning import DEFAULT_ROUND_SIZE, RoundResult, RoundSettings, learning_round
from annotator.model_history import (
    file_version,
    produced_by,
    project_model,
    record_round,
    record_start,
    runs_dir,
    same_weights,
)
from annotator.store import Project, ReviewState
from model.errors import InputError

log = logging.getLogger(__name__)


class LearningControl(QObject):
    """``session()`` gives the open project's session, or None; ``model`` is the window's
    annotator.gui.model_control.ModelControl (the model in use, loading, proposing)."""

    finished = Signal(object, str, str)  # RoundResult, base version, produced version ("" for none)
    progressed = Signal(str)  # what the running round is doing, for the status bar

    def __init__(
        self, parent: QObject, status: StatusBar, settings: QSettings, session: Callable[[], Session | None], model
    ) -> None:
        super().__init__(parent)
        self.status = status
        self.settings = settings
        self.session = session
        self.model = model
        self.enabled = settings.value("learning/enabled", False, type=bool)
        self.round_size = int(settings.value("learning/round_size", DEFAULT_ROUND_SIZE))
        self.round_settings = RoundSettings()  # tests shorten the training
        self._done_since: set[int] = set()  # images marked done since the last round began
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen | None = None
        self._round_project: Path | None = None  # the project file the running round learns from
        self._stopping = False
        self._wanted: str | None = None  # weights to load once the model thread is free
        self._repropose = False  # once the round's model is loaded: re-propose the untouched images
        self.last_result: RoundResult | None = None  # the last round's outcome (what it decided, why)
        self.finished.connect(self._on_finished)
        self.progressed.connect(status.set_learning)
        model.service.model_loaded.connect(self._model_loaded)  # after ModelControl remembered its name
        model.service.model_failed.connect(self._switch_failed)
        model.service.load_cancelled.connect(self._switch_failed)
        model.service.busy_changed.connect(self._busy_changed)  # switching waits for a free model thread

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled
        self.maybe_start()

    def remember(self) -> None:
        """The person turned learning on or off: kept for the next start (the demo turns it on
        for its session only)."""
        self.settings.setValue("learning/enabled", self.enabled)

    def set_round_size(self, size: int) -> None:
        self.round_size = max(1, int(size))
        self.settings.setValue("learning/round_size", self.round_size)
        self.maybe_start()

    def project_opened(self, session: Session) -> None:
        """A project opened: its count of newly done images starts at 0, and it proposes with its own
        model in use (the last one its loop switched to, or the person chose) when that is a file
        still there; otherwise the model loaded becomes its model in use."""
        self._done_since = set()
        self._wanted, self._repropose = None, False
        session.review_state_changed.connect(self._state_changed)
        weights = project_model(session.project)
        if weights is not None:
            self._wanted = weights
            self._load_wanted()
        elif self.model.service.has_model:
            self._record_start(session.project, self.model.service.model_version)

    def _state_changed(self, image_id: int) -> None:
        session = self.session()
        if session is None or not session.project.id_in_use("images", image_id):
            return
        if session.project.image(image_id).state == ReviewState.DONE:
            self._done_since.add(image_id)
        else:
            self._done_since.discard(image_id)
        self.maybe_start()

    def maybe_start(self) -> bool:
        """Starts a round when learning is on, N images were newly marked done, a model is in use
        (no switch to another pending) and no round runs; returns whether one started."""
        session = self.session()
        weights = self.settings.value("model/name") or ""
        switching = self._wanted is not None or self._repropose  # the round starts from the model to come
        ready = self.enabled and not self.running and not switching and self.model.service.has_model and weights
        if session is None or not ready or len(self._done_since) < self.round_size:
            return False
        self._done_since = set()
        run_dir = next_round_dir(session.project.path)
        base = self.model.service.model_version
        settings = dataclasses.replace(self.round_settings, on_process=self._started)
        self._round_project = session.project.path
        self._thread = threading.Thread(
            target=self._run, args=(self._round_project, str(weights), run_dir, settings, base), daemon=True
        )
        self._thread.start()
        self.status.showMessage(f"Learning from the images marked done ({run_dir.name})…", 6000)
        self.status.set_learning("Learning: starting the training")
        return True

    def _started(self, process: subprocess.Popen) -> None:
        self._process = process
        if self._stopping:
            _end(process)

    def _run(self, project_path: Path, weights: str, run_dir: Path, settings: RoundSettings, base: str) -> None:
        try:
            # its own connection: this thread only reads, and leaves the window's project as it is
            with Project.open(project_path, tidy=False) as project:
                result = learning_round(project, weights, run_dir, settings, self._training_event)
            produced = produced_by(result)
            version = file_version(produced) if produced is not None else ""
        except Exception as error:  # a round must never take the app down
            result = RoundResult(weights, False, f"learning failed: {error}", failed=True, run_dir=run_dir)
            version = ""
        if not self._stopping:
            self.finished.emit(result, base, version)

    def _training_event(self, event: dict) -> None:
        """On the round's thread: a training event, said in the status bar (through a signal)."""
        if event.get("event") == "progress" and isinstance(event.get("total"), int):
            eta = event.get("eta_s")
            if not isinstance(eta, (int, float)):
                left = ""
            elif eta < 90:
                left = ", under a minute left"
            else:
                left = f", about {round(eta / 60)} min left"
            self.progressed.emit(f"Learning: step {event.get('iteration')} of {event['total']}{left}")
        elif event.get("event") == "done":
            self.progressed.emit("Learning: the new model is trained")

    def _on_finished(self, result: RoundResult, base: str, version: str) -> None:
        session = self.session()
        self.status.set_learning("")
        self._process = None
        self.last_result = result
        for line in result.log[-20:] if result.failed else []:
            log.warning("%s", line)
        if result.failed:
            log.warning("learning round failed: %s", result.reason)
            self.status.showMessage(f"Learning round failed, nothing changed: {result.reason}", 15000)
            return
        if session is None or session.project.path != self._round_project:
            self._record_elsewhere(result, base, version)  # another project opened meanwhile
            return
        if version:
            try:
                record_round(session.project, result, base, version)
            except InputError as error:  # a project that cannot be written: the round still counts
                log.warning("the round's model is not in the history: %s", error)
        self.status.showMessage(f"Learning round: {result.reason}", 15000)
        if result.replaced:
            self._wanted, self._repropose = result.weights, True
            self._load_wanted()
        else:
            self.maybe_start()

    def _record_elsewhere(self, result: RoundResult, base: str, version: str) -> None:
        """The round's model goes into the history of the project it learned from, which is no longer
        open; the app's model stays."""
        if version and self._round_project is not None:
            try:
                with Project.open(self._round_project) as project:
                    record_round(project, result, base, version)
            except InputError as error:
                log.warning("the round's model is not in the history: %s", error)
        self.status.showMessage(f"Learning round for {self._round_project.name}: {result.reason}", 15000)

    def _load_wanted(self) -> None:
        """Loads the model to switch to, once the model thread is free; one loaded already is
        only recorded as the model in use."""
        service = self.model.service
        if self._wanted is None or service.busy:
            return
        session = self.session()
        if service.has_model and same_weights(self._wanted, str(self.settings.value("model/name") or "")):
            self._wanted = None
            if session is not None:
                self._record_start(session.project, service.model_version)
            self.maybe_start()
            return
        weights, self._wanted = self._wanted, None
        if not self.model.load_run(weights):
            self._wanted = weights  # refused: tried again when the thread is free

    def _model_loaded(self, version: str, device: str) -> None:
        """A model loaded: it is the project's model in use (recorded in its history when new),
        unless another is waiting to replace it."""
        session = self.session()
        if session is not None and self._wanted is None:
            self._record_start(session.project, version)

    def _record_start(self, project: Project, version: str) -> None:
        try:
            record_start(project, version, str(self.settings.value("model/name") or version))
        except InputError as error:  # a project that cannot be written keeps no history
            log.warning("the model in use is not recorded: %s", error)

    def _switch_failed(self, *_) -> None:
        """The round's model did not load: the model in use stays, and so do the proposals."""
        self._repropose = False
        self.maybe_start()

    def _busy_changed(self, busy: bool) -> None:
        """The model thread is free: a model waiting to be used loads; after a round's model loaded,
        the images nobody has touched get its proposals."""
        session = self.session()
        if busy or self.model.service.busy or session is None:  # auto-propose may have taken it already
            return
        if self._wanted is not None:
            self._load_wanted()
            return
        if not self._repropose:
            return
        self._repropose = False
        states = [ReviewState.UNLABELED, ReviewState.PROPOSED]
        ids = [image.id for image in session.project.iter_images(states=states)]
        if ids and self.model.service.propose(ids):
            self.status.set_progress(0, len(ids))
            reason = self.last_result.reason if self.last_result is not None else ""
            self.status.showMessage(f"Learning round: {reason}; re-proposing {len(ids)} untouched images", 15000)
        self.maybe_start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ends a running round (its child's process group) and waits for its thread: the app quits."""
        self._stopping = True
        if self._process is not None:
            _end(self._process)
        if self._thread is not None:
            self._thread.join(timeout)


def next_round_dir(project_path: Path) -> Path:
    """``<project>.runs/round-NNN``, the first number not taken."""
    folder = runs_dir(project_path)
    taken = {p.name for p in folder.glob("round-*")} if folder.is_dir() else set()
    number = 1
    while f"round-{number:03d}" in taken:
        number += 1
    return folder / f"round-{number:03d}"


def _end(process: subprocess.Popen) -> None:
    """Ends a child and its process group (annotator.learning.start_child made it a group leader)."""
    try:
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.terminate()
    except (ProcessLookupError, PermissionError):
        pass
