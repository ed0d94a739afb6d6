"""``python main.py --demo``: the bundled demo project and small model, so that a new user sees
proposals offline with one command.

The bundle (``resources/demo/``) holds ``model.safetensors``, the small model trained on synthetic
shapes (README: "The demo model"), and ``images/``, unlabelled synthetic images of the same shapes.
On first use a project over a copy of those images, with the shapes' categories and keypoints, is
made in the user's data folder, so that the installed copy stays pristine. A bundled ``demo.annot``
would be copied instead; without bundled images, synthetic ones are generated there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from PySide6.QtCore import QStandardPaths

from annotator.image_folder import create_project, scan_images
from resources import DEMO_DIR, bundled_model

BUNDLED = DEMO_DIR
DEMO_IMAGES = 12


def user_demo_dir() -> Path:
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base or Path.home() / ".maskrcnn-annotator") / "demo"


def demo_project_path(target: Path | None = None) -> Path:
    """The user's demo project, made on first use (copied from the bundle, or generated)."""
    target = target or user_demo_dir()
    project_file = target / "demo.annot"
    if project_file.exists():
        return project_file
    target.mkdir(parents=True, exist_ok=True)
    if (BUNDLED / "demo.annot").is_file():
        shutil.copytree(BUNDLED, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.*"))
        return project_file
    from model.images import is_image_file
    from model.synthetic import coco_categories, generate

    images = target / "data" / "images"
    if (BUNDLED / "images").is_dir():
        images.mkdir(parents=True, exist_ok=True)
        for file in sorted((BUNDLED / "images").iterdir()):
            if is_image_file(file):
                shutil.copy2(file, images / file.name)
    else:
        generate(target / "data", DEMO_IMAGES, seed=7, size=(360, 480))
    with create_project(project_file, scan_images(images)) as project, project.transaction():
        for category in coco_categories():
            project.add_category(
                category["name"],
                category["supercategory"],
                keypoints=category["keypoints"],
                skeleton=[tuple(pair) for pair in category["skeleton"]],
            )
    return project_file


def open_demo(window) -> None:
    from annotator.gui.proposals import ModelChoice

    model = bundled_model()
    if model is not None:
        # the point of the demo is proposals at once: auto-propose is on for this session (checked,
        # not triggered, so the user's own setting is not changed)
        window.actions_by_name["auto_propose"].setChecked(True)
        window.actions_by_name["learn"].setChecked(True)  # and so is learning as you label
    window.open_path(demo_project_path())
    if model is not None:
        window.load_model(ModelChoice("file", str(model), "demo model"), "auto")
    else:
        window.status.showMessage("The bundled demo model is not installed yet: Model → Choose model", 10000)
