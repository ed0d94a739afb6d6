"""``python main.py --demo``: the bundled demo project and small model, so that a new user sees
proposals offline with one command.

The bundled files (``resources/demo/``: ``demo.annot`` with its ``images/``, and ``model.*``) come
from the training issue. The project is copied to the user's data folder on first use, so that the
installed copy stays pristine. Until the bundled project exists, a demo project of synthetic shapes
(``model.synthetic``) is generated there instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from PySide6.QtCore import QStandardPaths

from annotator.store import Project

BUNDLED = Path(__file__).resolve().parents[2] / "resources" / "demo"
MODEL_NAMES = ("model.safetensors", "model.pth", "model.pt")
DEMO_IMAGES = 12


def user_demo_dir() -> Path:
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base or Path.home() / ".maskrcnn-annotator") / "demo"


def bundled_model() -> Path | None:
    return next((BUNDLED / name for name in MODEL_NAMES if (BUNDLED / name).is_file()), None)


def demo_project_path(target: Path | None = None) -> Path:
    """The user's demo project, made on first use (copied from the bundle, or generated)."""
    target = target or user_demo_dir()
    project_file = target / "demo.annot"
    if project_file.exists():
        return project_file
    target.mkdir(parents=True, exist_ok=True)
    if (BUNDLED / "demo.annot").is_file():
        shutil.copytree(BUNDLED, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*MODEL_NAMES))
        return project_file
    from model.synthetic import coco_categories, generate
    from model.images import probe_image

    generate(target / "data", DEMO_IMAGES, seed=7, size=(360, 480))
    images = target / "data" / "images"
    with Project.create(project_file, images) as project, project.transaction():
        for category in coco_categories():
            project.add_category(category["name"], category["supercategory"], keypoints=category["keypoints"],
                                 skeleton=[tuple(pair) for pair in category["skeleton"]])
        for file in sorted(images.iterdir()):
            info = probe_image(file)
            project.add_image(file.name, info.width, info.height, info.sha256)
    return project_file


def open_demo(window) -> None:
    from annotator.gui.proposals import ModelChoice

    window.open_path(demo_project_path())
    model = bundled_model()
    if model is not None:
        window.load_model(ModelChoice("file", str(model), "demo model"), "auto")
    else:
        window.status.showMessage("The bundled demo model is not installed yet: Model → Choose model", 10000)
