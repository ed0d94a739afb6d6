"""The project's model history without a window: the starting model, a round's model kept beside
the project, the one in use, and ``main.py info`` listing them with the effort each measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import main
from annotator.learning import RoundResult
from annotator.model_history import record_round, record_start, runs_dir, weights_of
from annotator.store import Project, ReviewState, Source


def test_the_history_keeps_each_model_with_its_base_and_info_lists_it(tmp_path: Path, capsys) -> None:
    path = tmp_path / "p.annot"
    with Project.create(path, tmp_path) as project:
        project.add_image("a.png", 8, 8, "0" * 64)
        project.add_category("cell")
        record_start(project, "demo@1234abcd", "maskrcnn_resnet50_fpn.COCO_V1")
        record_start(project, "demo@1234abcd", "maskrcnn_resnet50_fpn.COCO_V1")  # loaded again: one record
        run = runs_dir(path) / "round-001"
        run.mkdir(parents=True)
        (run / "model_final.safetensors").write_bytes(b"weights")
        result = RoundResult(
            str(run / "model_final.safetensors"), True, "switched", trained_on=7, new_ap=0.5, run_dir=run
        )
        version = record_round(project, result, "demo@1234abcd")
        assert version.startswith("model_final@")
        record_start(project, version, str(run / "model_final.safetensors"))
        start, produced = project.model_history()
        assert (start.base, start.weights, produced.base, produced.trained_on) == (
            None,
            start.weights,
            start.version,
            7,
        )
        assert produced.weights == "p.annot.runs/round-001/model_final.safetensors"  # moves with the project
        assert weights_of(project, produced) == str(tmp_path / produced.weights)
        assert project.model_in_use == version
        mask = np.zeros((8, 8), dtype=bool)
        mask[1:4, 1:4] = True
        project.add_instance(1, 1, mask=mask, score=0.9, source=Source.MODEL, model_version=version)
        project.set_review_state(1, ReviewState.DONE)
        project.update_instance(project.instances(1)[0].id, source=Source.HUMAN)
        failed = RoundResult("x", False, "training failed", failed=True, run_dir=run)
        assert record_round(project, failed, version) is None
    assert main.main(["info", str(path)]) == 0
    printed = capsys.readouterr().out.splitlines()
    listed = printed[printed.index("models (* in use):") + 1 :]
    assert listed[0].startswith("    demo@1234abcd  (starting model")
    assert listed[1].startswith(f"  * {version}  (from demo@1234abcd, 7 images")
    assert "held-out mask AP 50.0" in listed[1] and "labelled 1 image: 100% as-is" in listed[1]
