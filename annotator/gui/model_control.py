"""The proposal model as the window uses it: choosing and loading one (and loading it again at the
next start), proposing for the image in view or for every unlabeled image, auto-propose, writing
what comes back to the project, and fine-tuning. The rules are Qt-free (annotator.prompts for what
a result becomes, annotator.auto_propose for when an image is drafted); this wires them to the
model thread (annotator.gui.proposals), the status bar and the settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, Signal
from PySide6.QtWidgets import QInputDialog, QWidget

from annotator.auto_propose import AutoPropose
from annotator.gui import unavailable
from annotator.gui.garbage import collect_on_the_ui_thread
from annotator.gui.model_picker import DownloadProgressDialog, model_knowledge
from annotator.gui.proposals import ModelChoice, ModelKind, PredictorLike, ProposalService
from annotator.gui.session import Session
from annotator.gui.status_bar import StatusBar
from annotator.prompts import ProposalResult, box_only, store_result
from annotator.store import ReviewState
from model.cli import PRECISION_CHOICES

NO_MODEL = "No model is loaded: choose one in Model → Choose model"


class ModelControl(QObject):
    """Owns the model thread's service (``service``) and its download dialog (``downloads``).
    ``session()`` gives the open project's session, or None."""

    error = Signal(str, str)  # title, text: for the window to show
    state_changed = Signal()  # a model loaded, or the model thread became busy or free

    def __init__(
        self,
        parent: QWidget,
        status: StatusBar,
        settings: QSettings,
        session: Callable[[], Session | None],
        predictor_factory: Callable[[ModelChoice, str], PredictorLike] | None = None,
    ) -> None:
        super().__init__(parent)
        self.status, self.settings, self.session = status, settings, session
        self.service = ProposalService(predictor_factory, self) if predictor_factory else ProposalService(parent=self)
        self.service.paths = self._image_path
        self.auto = AutoPropose(enabled=settings.value("model/auto_propose", False, type=bool))
        self._loading: tuple[ModelChoice, str] | None = None  # the model choice being loaded, and device
        self._drop_results_until_idle = False  # a job of the project opened before this one
        service = self.service
        service.result.connect(self._on_result)
        service.progress.connect(status.set_progress)
        service.failed.connect(lambda text: self.error.emit("Model", text))
        service.model_failed.connect(self._on_failed)
        service.precision_settled.connect(self._on_precision_settled)
        service.model_loaded.connect(self._on_loaded)
        service.load_cancelled.connect(self._on_load_cancelled)
        self.downloads = DownloadProgressDialog(service, parent)
        service.status.connect(lambda text: status.showMessage(text, 4000))
        service.busy_changed.connect(self._on_busy)
        service.progress.connect(self._on_progress)
        status.cancel_button.clicked.connect(self.cancel_job)

    def _image_path(self, image_id: int) -> str:
        session = self.session()
        return str(session.project.image_path(session.project.image(image_id))) if session else ""

    # -- loading --------------------------------------------------------------------------------

    def load(self, choice: ModelChoice, device: str = "auto") -> bool:
        """Starts loading ``choice``; False when the model thread is busy (the status bar says so)
        and nothing changes."""
        if not self.service.load(choice, device):
            return False
        self._loading = (choice, device)  # remembered in the settings once it has loaded
        self.status.set_model(f"loading {choice.title}…", device)
        return True

    def load_run(self, weights: str) -> bool:
        """Loads the weights of a fine-tuning run, on the device and in the precision in use."""
        return self.load(ModelChoice(ModelKind.RUN, weights, precision=self.precision), self.service.device or "auto")

    @property
    def precision(self) -> str:
        """The precision chosen in the model picker (kept in the settings): auto unless changed."""
        value = self.settings.value("model/precision", "auto")
        return value if value in PRECISION_CHOICES else "auto"

    def restore(self) -> bool:
        """Loads the model that last loaded (kept in the settings), as labelme and CVAT users
        expect of a desktop tool; not a file that has gone since. Registry weights loaded before
        are in torch's cache, so this downloads nothing unless the cache was emptied."""
        kind, name = self.settings.value("model/kind"), self.settings.value("model/name")
        if kind not in tuple(ModelKind) or not name:
            return False
        if kind != ModelKind.REGISTRY and not Path(name).is_file():
            return False
        label = self.settings.value("model/label", "") or ""
        self.load(ModelChoice(kind, name, label, self.precision), self.settings.value("model/device", "auto") or "auto")
        return True

    def choose(self) -> None:
        from annotator.gui.model_picker import ModelPickerDialog

        session = self.session()
        dialog = ModelPickerDialog(session.project.path if session else None, self.parent(), self.precision)
        if dialog.exec():
            choice, device = dialog.selection()
            if choice is not None:
                self.load(choice, device)

    def _on_loaded(self, version: str, device: str) -> None:
        collect_on_the_ui_thread().freeze()  # the model and torch's modules stay: keep full collections cheap
        knowledge = ""
        if self._loading is not None:
            choice, requested = self._loading
            knowledge = model_knowledge(choice)
            for key, value in (
                ("kind", choice.kind.value),
                ("name", choice.name),
                ("label", choice.label),
                ("precision", choice.precision),
                ("device", requested),
            ):
                self.settings.setValue(f"model/{key}", value)
            self._loading = None
        # what runs, as the Predictor says it ("cpu · bf16"); the device alone is what a reload asks for
        self.status.set_model(version, getattr(self.service.worker.predictor, "execution", device), knowledge)
        self.status.showMessage(f"Model ready: {version} on {device}" + (f" — {knowledge}" if knowledge else ""), 8000)
        self.state_changed.emit()

    def _on_precision_settled(self, note: str) -> None:
        """bfloat16 checked against float32 once for these weights: the status bar says what runs."""
        self.status.set_model(self.service.model_version, self.service.worker.predictor.execution)
        self.status.showMessage(note, 10000)

    def _on_failed(self, message: str) -> None:
        self._on_load_cancelled()
        self.error.emit("Model", message)

    def _on_load_cancelled(self) -> None:
        self._loading = None  # the model in use, if any, stays; so does the remembered choice
        self.status.set_model(self.service.model_version, self.service.device)

    # -- jobs -----------------------------------------------------------------------------------

    def _on_busy(self, busy: bool) -> None:
        if not busy:
            self.status.set_progress(0, 0)
            self.auto.job_finished()
            self._drop_results_until_idle = False
        self.state_changed.emit()  # before a job auto-propose starts, which makes the thread busy again
        if not busy:
            self.auto_propose()
            self._prepare_open_image()

    def _prepare_open_image(self) -> None:
        """The open image's features computed ahead (``ProposalService.prepare``), once the thread is
        free: after a model loads, or a job ends (cached already after a proposal: then instant)."""
        session = self.session()
        if session is not None and session.image_id and not self.service.busy:
            self.service.prepare(session.image_id)

    def _on_progress(self, done: int, total: int) -> None:
        session = self.session()
        if self.auto.job_progressed(session.image_id if session else 0):
            self.service.cancel()

    def cancel_job(self) -> None:
        if self.service.busy:
            self.auto.cancelled_by_user()
        self.service.cancel()

    def project_changing(self) -> None:
        """Another project opens: results of a job still running are for the previous project's
        images, whose ids this project may use for others."""
        self._drop_results_until_idle = self.service.busy
        if self.auto.project_closed():
            self.service.cancel()

    def propose_current(self) -> None:
        session = self.session()
        reason = unavailable.no_image(session)
        if reason:
            self.status.showMessage(reason, unavailable.MESSAGE_MS)
            return
        if not self.service.has_model:
            self.error.emit("Model", NO_MODEL)
            return
        self.service.propose([session.image_id])

    def propose_all(self) -> None:
        session = self.session()
        if session is None:
            self.status.showMessage(unavailable.NO_PROJECT, unavailable.MESSAGE_MS)
            return
        if not self.service.has_model:
            self.error.emit("Model", NO_MODEL)
            return
        ids = [r.id for r in session.project.iter_images(ReviewState.UNLABELED)]
        if not ids:
            self.status.showMessage("No unlabeled images left", 4000)
            return
        self.status.set_progress(0, len(ids))
        self.service.propose(ids)

    def refine_selected_boxes(self) -> None:
        """Model → Refine boxes to masks: box to mask on the selected box-only labels (all of the
        image's when none is selected), each mask into its label, as one undo step."""
        session = self.session()
        reason = unavailable.no_image(session)
        if reason:
            self.status.showMessage(reason, unavailable.MESSAGE_MS)
            return
        chosen = session.review.editable_selection(session.selection)
        instances = [session.project.instance(i) for i in chosen] if chosen else session.instances()
        boxes = [i for i in instances if box_only(i)]
        if not boxes:
            self.status.showMessage(unavailable.NO_BOX_ONLY, unavailable.MESSAGE_MS)
            return
        if not self.service.has_model:
            self.error.emit("Model", NO_MODEL)
            return
        targets = []
        for instance in boxes:
            x, y, w, h = instance.bbox
            targets.append((instance.id, (x, y, x + w, y + h), session.project.category(instance.category_id).name))
        self.service.refine_boxes(session.image_id, targets)

    def _on_result(self, result: ProposalResult) -> None:
        session = self.session()
        if session is None or self._drop_results_until_idle or not session.project.id_in_use("images", result.image_id):
            return
        if session.project.read_only:  # no job starts for one (annotator.gui.read_only); none is stored
            return
        outcome = store_result(session.review, result, session.ensure_category, session.image_id)
        if outcome.select:
            session.select(outcome.select)
        if outcome.message:
            self.status.showMessage(outcome.message, 4000)

    # -- auto-propose (annotator.auto_propose) ---------------------------------------------------

    def on_auto_triggered(self) -> None:
        """The person turned auto-propose on or off (the action's toggle set ``auto.enabled``)."""
        self.settings.setValue("model/auto_propose", self.auto.enabled)
        self.auto_propose()

    def on_image_opened(self, image_id: int) -> None:
        if self.auto.image_opened(image_id):
            self.service.cancel()  # the person moved on; the image now open gets the next job
        self.auto_propose()
        self._prepare_open_image()  # not when auto-propose started: it computes the features itself

    def auto_propose(self) -> None:
        session = self.session()
        image_id = session.image_id if session else 0
        model_free = self.service.has_model and not self.service.busy
        if self.auto.wants(session.project if session else None, image_id, model_free):
            if self.service.propose([image_id]):
                self.auto.submitted(image_id)

    # -- fine-tuning ----------------------------------------------------------------------------

    def fine_tune(self) -> None:
        session = self.session()
        if session is None:
            self.status.showMessage(unavailable.NO_PROJECT, unavailable.MESSAGE_MS)
            return
        from annotator.gui.finetune_dialog import FineTuneDialog

        # the model in use comes first: fine-tuning again goes on from the last run, not the demo
        bases = FineTuneDialog.default_bases()
        current = self.settings.value("model/name") if self.service.has_model else None
        if current:
            bases = [current] + [base for base in bases if base != current]
        dialog = FineTuneDialog(session.project, self.parent(), base_weights=bases)
        dialog.model_ready.connect(lambda path: self.load_run(path))
        dialog.exec()

    # -- the learning loop's settings and the model history (annotator.gui.learning) -----------------

    def choose_round_size(self) -> None:
        learning = self.parent().learning
        size, ok = QInputDialog.getInt(
            self.parent(),
            "Learn as I label",
            "Fine-tune after this many images marked done:",
            learning.round_size,
            1,
            1000,
        )
        if ok:
            learning.set_round_size(size)

    def show_history(self) -> None:
        session = self.session()
        if session is None:  # the history is the project's (its runs, and the models its labels came from)
            self.status.showMessage(unavailable.NO_PROJECT, unavailable.MESSAGE_MS)
            return
        from annotator.gui.model_history_dialog import ModelHistoryDialog

        dialog = ModelHistoryDialog(session.project, self.parent())
        dialog.use_requested.connect(self.use_weights)
        dialog.exec()

    def use_weights(self, weights: str) -> None:
        """Switches to a model of the history: a weights file, or registry weights."""
        kind = ModelKind.FILE if Path(weights).is_file() else ModelKind.REGISTRY
        self.load(ModelChoice(kind, weights, precision=self.precision), self.service.device or "auto")
