"""A combined registry entry (two published networks run as one, ``model.person_pose``) in the app:
the model picker offers it, and loading it downloads both files under the progress dialog."""

from __future__ import annotations

import dataclasses

from annotator.gui.model_picker import combined_choices
from annotator.gui.proposals import ModelChoice, ModelKind
from model.weights.registry import COMBINED, CombinedWeightsInfo
from tests.files import few_megabytes_published
from tests.gui.driving import open_and_wait


def test_the_model_picker_offers_the_combined_entry_with_both_files_size() -> None:
    choices = {choice.name: choice for choice in combined_choices()}
    choice = choices["masks_and_keypoints_resnet50_fpn.COCO_V1"]
    assert choice.kind == ModelKind.REGISTRY
    assert choice.title == "masks_and_keypoints_resnet50_fpn.COCO_V1  (403 MB in two files, download once)"


def test_loading_a_combined_entry_downloads_both_files_under_the_progress_dialog(
    qtbot, window, blob_project, hub, tmp_path, monkeypatch
):
    masks, masks_source = few_megabytes_published(tmp_path / "server" / "masks")
    keypoints, keypoints_source = few_megabytes_published(tmp_path / "server" / "keypoints")
    entry = CombinedWeightsInfo(
        name="pair.TEST", masks=dataclasses.replace(masks, name="masks.TEST"), keypoints=keypoints
    )
    monkeypatch.setitem(COMBINED, entry.name, entry)
    labels = []
    window.proposals.download_progress.connect(lambda name, done, total: labels.append(name))
    open_and_wait(qtbot, window, blob_project)

    window.load_model(ModelChoice(ModelKind.REGISTRY, entry.name), "cpu")  # the test's factory loads a fake
    qtbot.waitUntil(lambda: window.proposals.has_model and not window.proposals.busy, timeout=10000)

    assert labels[0] == "masks.TEST" and labels[-1] == keypoints.name and set(labels) == {"masks.TEST", keypoints.name}
    assert (hub / masks_source.name).read_bytes() == masks_source.read_bytes()
    assert (hub / keypoints_source.name).read_bytes() == keypoints_source.read_bytes()
    assert not window.model_control.downloads.isVisible()
