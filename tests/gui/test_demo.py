"""The bundled demo: a new user gets working mask and keypoint proposals offline."""

from __future__ import annotations

from model.data import load_coco
from model.evaluation import evaluate
from model.predictor import Predictor
from resources import DEMO_DIR, DEMO_MODEL


def test_bundled_demo_model_proposes_masks_and_keypoints_on_the_demo_images() -> None:
    predictor = Predictor(DEMO_MODEL, device="cpu")
    assert predictor.class_names[1:] == ("ellipse", "rectangle", "triangle", "star")
    assert predictor.keypoint_names == ("centre", "top", "right", "bottom", "left")
    data = load_coco(DEMO_DIR / "annotations.json", DEMO_DIR / "images")
    summary = evaluate(predictor, data)
    # held-out synthetic images of the kind it was trained on (0.78 / 0.66 when it was bundled)
    assert summary["segm"]["AP"] >= 0.6
    assert summary["keypoints"]["AP"] >= 0.5


def test_the_demo_opens_with_proposals_on_its_first_image_without_changing_the_users_setting(
    qtbot, tmp_path, monkeypatch
) -> None:
    from PySide6.QtCore import QSettings

    import annotator.gui.demo as demo
    from annotator.gui.main_window import MainWindow
    from annotator.store import Source

    monkeypatch.setattr(demo, "user_demo_dir", lambda: tmp_path / "demo")
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings)  # the real Predictor with the bundled model
    qtbot.addWidget(window)
    window.show()
    try:
        demo.open_demo(window)
        qtbot.waitUntil(
            lambda: window.session is not None and any(i.source == Source.MODEL for i in window.session.instances()),
            timeout=60000,
        )
        assert window.session.project.path == tmp_path / "demo" / "demo.annot"
        assert window.actions_by_name["auto_propose"].isChecked()
        assert settings.value("model/auto_propose") is None  # on for the demo, not saved as the user's choice
    finally:
        window.close()
