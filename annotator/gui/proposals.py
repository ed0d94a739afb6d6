"""The model thread: one worker owns the predictor and runs one job at a time; results come back
to the UI thread by signals, already converted to what the store takes (compressed RLE), so that
the UI thread only writes them.

The GUI depends on the predictor through :class:`PredictorLike` only: ``predict(image)`` and
``predict_in_box(image, box, label)`` return an ``Instances``-like record (``boxes`` x1,y1,x2,y2,
``scores``, ``labels``, ``label_names``, ``masks`` N x H x W bool, ``keypoints`` N x K x 3), and
``model_version`` names the weights. A ``cancel()`` method, when present, is called on cancel so
that a long prediction can stop between stages.

Registry weights that are not in the cache yet are downloaded by the worker before the factory
runs (``model.weights.fetch``), so that the UI can show the bytes as they arrive and cancel the
download between chunks.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PySide6.QtCore import QCoreApplication, QObject, QThread, Signal, SignalInstance, Slot

from annotator.prompts import Box, PromptKind, ProposalResult, proposals_at_click, proposals_for
from annotator.proposals import Proposal, settle_precision
from model.images import read_image

# A download reports after 0.1 s or 1 % of the file (1 MB when the size is unknown), whichever
# comes first: a fast local download does not flood the UI's event loop, and a stalled one shows
# the bytes that did arrive (a report only ever follows a chunk).
DOWNLOAD_REPORT_INTERVAL_S = 0.1
DOWNLOAD_REPORT_FRACTION = 0.01
DOWNLOAD_REPORT_BYTES_UNKNOWN_SIZE = 1 << 20


class PredictorLike(Protocol):
    model_version: str

    def predict(self, image: np.ndarray) -> Any: ...

    def predict_in_box(
        self, image: np.ndarray, box: tuple[float, float, float, float], label: str | None = None
    ) -> Any: ...


class ModelKind(enum.StrEnum):
    """Where a model choice's weights are; the values are kept in the settings (``model/kind``)."""

    REGISTRY = "registry"  # published weights, by registry name (downloaded once into torch's cache)
    FILE = "file"  # a local weights file
    RUN = "run"  # the weights of a fine-tuning run of the project


@dataclass(frozen=True)
class ModelChoice:
    """What the user picked: registry weights (by name), a local file, or a fine-tuned run."""

    kind: ModelKind
    name: str  # registry name or file path
    label: str = ""
    precision: str = "auto"  # model.precision.PRECISIONS: auto, fp32, bf16 (the model picker's choice)

    def __post_init__(self) -> None:
        # the settings keep the kind's value: ModelChoice(settings.value("model/kind"), ...) works,
        # and an unknown kind is a ValueError here rather than a wrong branch later
        object.__setattr__(self, "kind", ModelKind(self.kind))

    @property
    def title(self) -> str:
        return self.label or (self.name if self.kind == ModelKind.REGISTRY else Path(self.name).name)


def default_predictor_factory(choice: ModelChoice, device: str) -> PredictorLike:
    from model.person_pose import open_predictor  # the model package: imported in the model thread only

    return open_predictor(choice.name, device=device, precision=choice.precision)


class ProposalWorker(QObject):
    """Lives on the model thread. Slots are called through queued signals, so jobs run in order,
    one at a time."""

    model_loaded = Signal(str, str)  # model version, device
    model_failed = Signal(str)
    load_cancelled = Signal()
    download_progress = Signal(str, object, object)  # weights name, bytes done, total bytes or None
    download_finished = Signal()
    result = Signal(object)  # ProposalResult
    progress = Signal(int, int)  # done, total
    failed = Signal(str)
    job_started = Signal(str)
    job_finished = Signal()
    precision_settled = Signal(str)  # what the first proposal decided about bfloat16 (Predictor.settle_precision)
    prepared = Signal()  # a prepare ended, done or skipped

    def __init__(self, factory: Callable[[ModelChoice, str], PredictorLike]) -> None:
        super().__init__()
        self.factory = factory
        self.predictor: PredictorLike | None = None
        self.cancel_event = threading.Event()
        self._cached: tuple[int, np.ndarray] | None = None  # last image read: prompts reuse it
        self._last_prediction: tuple[int, Any] | None = None
        self.wanted_image = 0  # the image whose features are worth computing ahead (set by the UI thread)

    def _image(self, image_id: int, path: str) -> np.ndarray:
        if self._cached is None or self._cached[0] != image_id:
            self._cached = (image_id, read_image(path))
        return self._cached[1]

    @contextlib.contextmanager
    def _job(
        self, title: str, failed: SignalInstance | None = None, cancelled: SignalInstance | None = None
    ) -> Iterator[None]:
        """One job of the model thread, between ``job_started`` and ``job_finished``. An error
        ends it as one message on ``failed`` (default: the ``failed`` signal); the user's cancel
        is not an error and goes to ``cancelled``, if given."""
        self.cancel_event.clear()
        self.job_started.emit(title)
        try:
            yield
        except Exception as error:
            if not _is_cancellation(error):
                (failed or self.failed).emit(_explain(error))
            elif cancelled is not None:
                cancelled.emit()
        finally:
            self.job_finished.emit()

    @Slot(object, str)
    def load(self, choice: ModelChoice, device: str) -> None:
        with self._job(f"Loading {choice.title}", failed=self.model_failed, cancelled=self.load_cancelled):
            _leave_a_core_for_the_ui()
            if choice.kind == ModelKind.REGISTRY:
                from model.weights.registry import registry_files  # imports torch: in the model thread only

                # a combined entry is two files, each downloaded as one; an unknown name fails in fetch
                for weights in registry_files(choice.name) or (choice.name,):
                    self._download(weights)
            self.predictor = self.factory(choice, device)
            self._last_prediction = None
            version = str(getattr(self.predictor, "model_version", "") or choice.title)
            actual = str(getattr(self.predictor, "device", device))
            self.model_loaded.emit(version, actual)

    def _download(self, weights: Any) -> None:
        """Registry weights (a name or a ``WeightsInfo``) into the cache, unless there already.
        ``download_progress`` reports the bytes (the first and last report always, others as
        DOWNLOAD_REPORT_* say); ``download_finished`` follows a download that started, however it ended."""
        from model.weights.download import DownloadCancelled, fetch  # imports torch: in the model thread only

        name = str(getattr(weights, "name", weights))
        started, last_time, last_done = False, 0.0, 0

        def report(done: int, total: int | None) -> None:
            nonlocal started, last_time, last_done
            if self.cancel_event.is_set():
                raise DownloadCancelled(name)
            now = time.monotonic()
            step = total * DOWNLOAD_REPORT_FRACTION if total else DOWNLOAD_REPORT_BYTES_UNKNOWN_SIZE
            if (
                not started
                or done == total
                or now - last_time >= DOWNLOAD_REPORT_INTERVAL_S
                or done - last_done >= step
            ):
                started, last_time, last_done = True, now, done
                self.download_progress.emit(name, done, total)

        try:
            fetch(weights, progress=False, on_progress=report)
        finally:
            if started:
                self.download_finished.emit()

    @Slot(list)
    def propose(self, jobs: list) -> None:
        """``jobs``: ``(image_id, path)`` pairs; one result signal per image, progress after each."""
        with self._job("Proposing" if len(jobs) == 1 else f"Proposing {len(jobs)} images"):
            for done, (image_id, path) in enumerate(jobs):
                if self.cancel_event.is_set():
                    break
                self.progress.emit(done, len(jobs))
                image = self._image(image_id, path)
                note = settle_precision(self.predictor, image)
                if note:
                    self.precision_settled.emit(note)
                instances = self.predictor.predict(image)
                if self.cancel_event.is_set():
                    break
                self._last_prediction = (image_id, instances)
                self.result.emit(self._result(image_id, instances, PromptKind.IMAGE))
            self.progress.emit(len(jobs), len(jobs))

    @Slot(int, str, tuple, str)
    def segment_box(self, image_id: int, path: str, box: tuple, label: str) -> None:
        with self._job("Segmenting the box"):
            image = self._image(image_id, path)
            instances = self.predictor.predict_in_box(image, tuple(box), label or None)
            self.result.emit(self._result(image_id, instances, PromptKind.BOX))

    @Slot(int, str)
    def prepare(self, image_id: int, path: str) -> None:
        """The backbone on the image just opened, its features cached for the person's first box or
        click (``Predictor.prepare``). Not a job: the service stays free to take one, which waits in
        this thread's queue until this ends. Skipped when the person has opened another image since
        (``wanted_image``); its failure is left to the job that needs the image to report."""
        prepare = getattr(self.predictor, "prepare", None)
        try:
            if callable(prepare) and image_id == self.wanted_image:
                prepare(self._image(image_id, path))
        except Exception:  # a cancellation, an unreadable image: the person's own job will say
            pass
        finally:
            self.prepared.emit()

    @Slot(int, str, list)
    def refine_boxes(self, image_id: int, path: str, targets: list) -> None:
        """``targets``: ``(instance_id, box, label)`` of box-only labels; box to mask on each box with
        its label (the backbone runs once: the predictor caches the image's features), one result."""
        with self._job("Refining boxes to masks"):
            image = self._image(image_id, path)
            refined, proposals = [], []
            for instance_id, box, label in targets:
                if self.cancel_event.is_set():
                    return
                found = proposals_for(PromptKind.BOX, self.predictor.predict_in_box(image, tuple(box), label or None))
                if found:
                    refined.append(instance_id)
                    proposals.append(found[0])
            result = self._result(image_id, None, PromptKind.REFINE, proposals)
            result.targets, result.asked = tuple(refined), len(targets)
            self.result.emit(result)

    @Slot(int, str, tuple, str)
    def segment_point(self, image_id: int, path: str, point: tuple, label: str) -> None:
        """The highest-scoring predicted mask holding ``point``, of any class and at any score (the
        image's last prediction is reused), else box to mask with ``label`` (the current category,
        "" for none) on a box grown from the click (annotator.prompts.proposals_at_click)."""
        with self._job("Finding the object at the click"):
            image = self._image(image_id, path)
            if self._last_prediction is None or self._last_prediction[0] != image_id:
                self._last_prediction = (image_id, self.predictor.predict(image))
            instances = self._last_prediction[1]
            segment_box = functools.partial(self.predictor.predict_in_box, image, label=label or None)
            found = proposals_at_click(instances, tuple(point), image.shape[:2], segment_box)
            self.result.emit(self._result(image_id, instances, PromptKind.POINT, found))

    def _result(
        self, image_id: int, instances: Any, prompt: PromptKind, proposals: list[Proposal] | None = None
    ) -> ProposalResult:
        """The proposals ``prompt`` gives (annotator.prompts; ``proposals`` where already made),
        masks encoded here, in the model thread."""
        version = str(getattr(instances, "model_version", "") or getattr(self.predictor, "model_version", ""))
        return ProposalResult(
            image_id,
            version,
            proposals_for(prompt, instances) if proposals is None else proposals,
            prompt,
            tuple(getattr(self.predictor, "keypoint_names", ())),
            tuple(getattr(self.predictor, "keypoint_skeleton", ())),
        )


def _leave_a_core_for_the_ui() -> None:
    """CPU inference on every core starves the UI thread (stalls of 50 ms and more on 2 cores);
    one core fewer costs the model little and keeps painting smooth."""
    try:
        import torch
    except ImportError:
        return
    cores = os.cpu_count() or 1
    if cores > 1 and torch.get_num_threads() > cores - 1:
        torch.set_num_threads(cores - 1)


def _is_cancellation(error: Exception) -> bool:
    """``model.predictor.PredictionCancelled`` or ``model.weights.DownloadCancelled``: the user
    cancelled; not an error to show."""
    return type(error).__name__ in ("PredictionCancelled", "DownloadCancelled")


def _explain(error: Exception) -> str:
    name = type(error).__name__
    text = str(error) or name
    if name == "WeightsUnavailableError" or isinstance(error, (ConnectionError, TimeoutError)):
        return f"The weights could not be downloaded (offline?): {text}. Pick a local file or a fine-tuned run."
    return text


class ProposalService(QObject):
    """The UI side of the model thread. Every request returns at once; ``busy`` is true while a
    job runs, and a second request while busy is refused (one job at a time)."""

    _load = Signal(object, str)
    _propose = Signal(list)
    _segment_box = Signal(int, str, tuple, str)
    _segment_point = Signal(int, str, tuple, str)
    _refine_boxes = Signal(int, str, list)
    _prepare = Signal(int, str)

    model_loaded = Signal(str, str)  # version, device
    model_failed = Signal(str)
    load_cancelled = Signal()  # the model in use, if any, stays
    download_progress = Signal(str, object, object)  # weights name, bytes done, total bytes or None
    download_finished = Signal()
    result = Signal(object)  # ProposalResult
    progress = Signal(int, int)
    failed = Signal(str)
    busy_changed = Signal(bool)
    status = Signal(str)
    precision_settled = Signal(str)

    def __init__(
        self,
        factory: Callable[[ModelChoice, str], PredictorLike] = default_predictor_factory,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.thread = QThread()
        self.thread.setObjectName("model")
        self.worker = ProposalWorker(factory)
        self.worker.moveToThread(self.thread)
        self._load.connect(self.worker.load)
        self._propose.connect(self.worker.propose)
        self._segment_box.connect(self.worker.segment_box)
        self._segment_point.connect(self.worker.segment_point)
        self._refine_boxes.connect(self.worker.refine_boxes)
        self._prepare.connect(self.worker.prepare)
        self.worker.prepared.connect(self._on_prepared)
        self.preparing = 0  # prepares sent to the model thread and not ended
        self.worker.model_loaded.connect(self._on_loaded)
        self.worker.model_failed.connect(self.model_failed)
        self.worker.load_cancelled.connect(self._on_load_cancelled)
        self.worker.download_progress.connect(self.download_progress)
        self.worker.download_finished.connect(self.download_finished)
        self.worker.result.connect(self.result)
        self.worker.progress.connect(self.progress)
        self.worker.failed.connect(self.failed)
        self.worker.precision_settled.connect(self.precision_settled)
        self.worker.job_started.connect(self.status)
        self.worker.job_finished.connect(self._on_finished)
        self.thread.start()
        # the thread must end before Qt destroys it, whichever way the program ends
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        _running.add(self)
        self.busy = False
        self.model_version = ""
        self.device = ""
        self.paths: Callable[[int], str] = lambda image_id: ""  # image id -> file path

    @property
    def has_model(self) -> bool:
        return bool(self.model_version)

    def _start(self) -> bool:
        if self.busy:
            self.status.emit("The model is busy; wait or cancel")
            return False
        self.busy = True
        self.busy_changed.emit(True)
        return True

    def _on_finished(self) -> None:
        self.busy = False
        self.busy_changed.emit(False)

    def _on_loaded(self, version: str, device: str) -> None:
        self.model_version, self.device = version, device
        self.model_loaded.emit(version, device)

    def _on_load_cancelled(self) -> None:
        self.status.emit("Download cancelled")
        self.load_cancelled.emit()

    def load(self, choice: ModelChoice, device: str = "auto") -> bool:
        if not self._start():
            return False
        self._load.emit(choice, device)
        return True

    def propose(self, image_ids: list[int]) -> bool:
        if not self.has_model or not image_ids or not self._start():
            return False
        self._propose.emit([(i, self.paths(i)) for i in image_ids])
        return True

    def segment_box(self, image_id: int, box: tuple[float, float, float, float], label: str = "") -> bool:
        if not self.has_model or not self._start():
            return False
        self._segment_box.emit(image_id, self.paths(image_id), tuple(box), label)
        return True

    def prepare(self, image_id: int) -> bool:
        """Computes the features of the image just opened in the model thread while the person
        looks at it (``ProposalWorker.prepare``), so that a box or click on it answers in the time of
        the heads. Only while no job runs; a prepare of the image left is cancelled (a job the person
        started is never cancelled by this)."""
        if not self.has_model or self.busy:
            return False
        self.worker.wanted_image = image_id
        if self.preparing:
            self._cancel_prediction()  # the prepare of the image left
        self.preparing += 1
        self._prepare.emit(image_id, self.paths(image_id))
        return True

    def _on_prepared(self) -> None:
        self.preparing = max(0, self.preparing - 1)

    def refine_boxes(self, image_id: int, targets: list[tuple[int, Box, str]]) -> bool:
        """Box to mask on box-only labels ``(instance_id, (x1, y1, x2, y2), category name)``."""
        if not self.has_model or not targets or not self._start():
            return False
        self._refine_boxes.emit(image_id, self.paths(image_id), list(targets))
        return True

    def segment_point(self, image_id: int, point: tuple[float, float], label: str = "") -> bool:
        if not self.has_model or not self._start():
            return False
        self._segment_point.emit(image_id, self.paths(image_id), tuple(point), label)
        return True

    def cancel(self) -> None:
        self.worker.cancel_event.set()
        self._cancel_prediction()

    def _cancel_prediction(self) -> None:
        """Ends the predictor's running prediction at its next stage (thread-safe), where it can."""
        cancel = getattr(self.worker.predictor, "cancel", None)
        if callable(cancel):
            cancel()

    def shutdown(self) -> None:
        if not self.thread.isRunning():
            return
        self.cancel()
        self.thread.quit()
        self.thread.wait(30000)
        _running.discard(self)


_running: set[ProposalService] = set()


@atexit.register
def _stop_model_threads() -> None:
    for service in list(_running):
        service.shutdown()
