"""The first run on a folder: which model proposes labels (issue 16, item 5). Opened with no model
ever chosen, a folder of photos would get nothing from Propose, or, with the demo model that
``default_weights`` falls back on, "star 0.84" on a face. So the first project opened asks once:
the demo model (and that it knows only synthetic shapes), COCO weights (downloaded once, with where
to put the file by hand when offline, as the download's own error says), a weights file on this
computer, or no model. The answer is kept in the settings (:data:`OFFERED`); Model > Choose model
changes it later.

Nothing is asked while a model is loaded or loading: ``main.py --demo`` loads its model right
after opening its project, and a model that loaded before is loaded again at start
(``ModelControl.restore``)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QSettings, QTimer
from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QLabel,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from annotator.gui.model_control import ModelControl
from annotator.gui.model_picker import model_knowledge
from annotator.gui.proposals import ModelChoice, ModelKind

OFFERED = "model/first_run_offered"  # the settings key: True once the person has answered
# The COCO weights offered: torchvision's v2 Mask R-CNN, the best masks of the registry's
# (41.8 mask AP against v1's 34.6) for 80 everyday classes.
COCO_WEIGHTS = "maskrcnn_resnet50_fpn_v2.COCO_V1"
LATER = "You can change this at any time in Model → Choose model (Ctrl+M)."


def coco_weights_file(name: str = COCO_WEIGHTS) -> Path:
    """Where the COCO weights are looked for first: torch's cache (``model.weights.download``)."""
    from model.weights.download import cache_dir  # imports torch, as the model picker does
    from model.weights.registry import REGISTRY

    return cache_dir() / REGISTRY[name].filename


def coco_offline_note(name: str = COCO_WEIGHTS) -> str:
    """What the COCO choice downloads, and where to put the file by hand without network access;
    or that it is on this computer already."""
    from model.weights.registry import REGISTRY

    info, file = REGISTRY[name], coco_weights_file(name)
    if file.is_file():
        return f"Already on this computer ({file})."
    return (
        f"{info.file_size_mb:.0f} MB, downloaded once. Without network access, fetch {info.url} on "
        f"another machine and place it at {file}"
    )


class FirstRunDialog(QDialog):
    """Demo model, COCO weights, a local weights file, or no model; :meth:`choice` is the answer
    (None: no model)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Which model should propose labels?")
        from resources import bundled_model

        self.demo_path = bundled_model()
        self.weights_file = ""
        self.group = QButtonGroup(self)
        layout = QVBoxLayout(self)
        intro = QLabel("The model proposes masks for you to accept or fix. Which one should this project use?")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        demo_knows = model_knowledge(ModelChoice(ModelKind.FILE, str(self.demo_path))) if self.demo_path else ""
        self.demo = self._option(
            layout,
            "The bundled demo model",
            f"It {demo_knows or 'was trained on synthetic shapes only'}: it shows how proposals work, but finds "
            "none of your own objects (on a face it proposes a star).",
        )
        self.demo.setEnabled(self.demo_path is not None)
        self.coco = self._option(
            layout, f"COCO weights ({COCO_WEIGHTS})", f"80 everyday classes: person, car, dog, … {coco_offline_note()}"
        )
        self.file = self._option(layout, "A weights file on this computer", "A .safetensors, .pth or .pt file.")
        self.browse = QPushButton("Choose the file…")
        self.browse.clicked.connect(self._browse)
        layout.addWidget(self.browse)
        self.none = self._option(layout, "No model for now", "Draw the labels yourself.")
        later = QLabel(LATER)
        later.setWordWrap(True)
        layout.addWidget(later)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok)
        self.buttons.accepted.connect(self.accept)
        layout.addWidget(self.buttons)
        self.group.buttonToggled.connect(lambda *_: self._update_ok())
        # the COCO weights where they are here already (everyday objects, as in a folder of photos)
        default = self.coco if coco_weights_file().is_file() else self.demo if self.demo.isEnabled() else self.none
        default.setChecked(True)
        self.resize(560, 420)

    def _option(self, layout: QVBoxLayout, title: str, note: str) -> QRadioButton:
        button = QRadioButton(title)
        self.group.addButton(button)
        text = QLabel(note)
        text.setWordWrap(True)
        text.setContentsMargins(24, 0, 0, 6)  # under its button's text
        layout.addWidget(button)
        layout.addWidget(text)
        return button

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Weights file", "", "Weights (*.safetensors *.pth *.pt)")
        if path:
            self.set_weights_file(path)

    def set_weights_file(self, path: str) -> None:
        self.weights_file = path
        self.file.setText(f"A weights file on this computer: {Path(path).name}")
        self.file.setChecked(True)
        self._update_ok()

    def _update_ok(self) -> None:
        # a weights file is an answer once there is a file
        ok = not self.file.isChecked() or bool(self.weights_file)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(ok)

    def choice(self) -> ModelChoice | None:
        if self.demo.isChecked() and self.demo_path is not None:
            return ModelChoice(ModelKind.FILE, str(self.demo_path), "demo model")
        if self.coco.isChecked():
            return ModelChoice(ModelKind.REGISTRY, COCO_WEIGHTS)
        if self.file.isChecked() and self.weights_file:
            return ModelChoice(ModelKind.FILE, self.weights_file)
        return None


class FirstRun(QObject):
    """Offers :class:`FirstRunDialog` once, as the first project opens with no model chosen: call
    :meth:`project_opened` as a project opens."""

    def __init__(self, parent: QWidget, settings: QSettings, model: ModelControl) -> None:
        super().__init__(parent)
        self.window, self.settings, self.model = parent, settings, model
        self.dialog: FirstRunDialog | None = None

    def wanted(self) -> bool:
        """Never answered, no model ever loaded, and none loaded or loading now."""
        service = self.model.service
        return not (
            self.settings.value(OFFERED, False, type=bool)
            or self.settings.value("model/kind")
            or service.has_model
            or service.busy
            or self.dialog is not None
        )

    def project_opened(self) -> None:
        # asked once the events queued with the opening are handled: the demo loads its model
        # right after opening its project, and is not interrupted
        if self.wanted():
            QTimer.singleShot(0, self.offer)

    def offer(self) -> None:
        if not self.wanted():
            return
        self.dialog = FirstRunDialog(self.window)
        self.dialog.finished.connect(self._answered)
        self.dialog.open()  # window-modal, and the event loop goes on (the image loads behind it)

    def _answered(self) -> None:
        dialog, self.dialog = self.dialog, None
        self.settings.setValue(OFFERED, True)  # closed without OK too: asked once, not at every opening
        choice = dialog.choice() if dialog.result() == QDialog.DialogCode.Accepted else None
        dialog.deleteLater()
        if choice is None:
            self.model.status.showMessage(f"No model: label by hand. {LATER}", 10000)
        else:
            self.model.load(choice)
