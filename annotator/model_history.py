"""The project's models, without Qt: the one it started from and every model a learning round
produced (kept or not), each with its base, the images it learned from, its held-out mask AP and
the effort measured while it proposed (``annotator.effort``). The records are in the store
(``Project.record_model``), the weights files beside the project (``<project>.runs/``), so the
history survives restarts and moves with the project; ``main.py info`` lists it and Model >
History switches back to any of them.
"""

from __future__ import annotations

import time
from pathlib import Path

from annotator.effort import effort_by_model
from annotator.learning import RoundResult
from annotator.records import ModelRecord
from annotator.store import Project
from annotator.wording import counted


def runs_dir(project_path: Path) -> Path:
    """Where a project's fine-tuning runs and learning rounds go: ``<project>.runs/`` beside it."""
    return project_path.with_name(project_path.name + ".runs")


def stored_weights(project: Project, weights: str) -> str:
    """``weights`` as the history keeps it: a file relative to the project's folder when it is
    under it (the project and its models move together), else as given (a registry name, a path)."""
    path = Path(weights)
    if not path.is_file():
        return weights
    try:
        return path.resolve().relative_to(project.path.parent.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def weights_of(project: Project, record: ModelRecord) -> str:
    """A record's weights as a loader takes them: a path (made absolute) or a registry name."""
    path = project.path.parent / record.weights
    return str(path) if not Path(record.weights).is_absolute() and path.is_file() else record.weights


def project_model(project: Project) -> str | None:
    """The weights file of the project's model in use, to propose with again when it is opened;
    None when it has none, or its model is registry weights (loading those may download: the
    person chooses that in the model picker) or a file that is gone."""
    record = next((r for r in project.model_history() if r.version == project.model_in_use), None)
    weights = weights_of(project, record) if record is not None else None
    return weights if weights is not None and Path(weights).is_file() else None


def same_weights(a: str, b: str) -> bool:
    """Whether two weights (files or registry names) are the same: files by their resolved path."""
    if Path(a).is_file() and Path(b).is_file():
        return Path(a).resolve() == Path(b).resolve()
    return a == b


def file_version(path: Path) -> str:
    """The model version the Predictor will give a weights file (file stem + 8 hash digits)."""
    from model.weights.download import WeightsFile, sha256_of

    return WeightsFile(path, sha256_of(path)).version


def record_start(project: Project, version: str, weights: str) -> None:
    """The model the app proposes with, once loaded: recorded (as a starting model when it is new
    to the history) and made the project's model in use."""
    if all(record.version != version for record in project.model_history()):
        project.record_model(ModelRecord(version, stored_weights(project, weights), None, 0, None, time.time()))
    project.use_model(version)


def produced_by(result: RoundResult) -> Path | None:
    """The weights file a finished round produced, kept or not; None when it produced none (it
    failed, or had nothing to train on)."""
    produced = None if result.failed or result.run_dir is None else result.run_dir / "model_final.safetensors"
    return produced if produced is not None and produced.is_file() else None


def record_round(project: Project, result: RoundResult, base_version: str, version: str | None = None) -> str | None:
    """Records the model a finished round produced, kept or not (its held-out AP says how it did);
    returns its version (``version`` when the caller hashed the file already), None for none."""
    produced = produced_by(result)
    if produced is None:
        return None
    version = version or file_version(produced)
    record = ModelRecord(
        version, stored_weights(project, str(produced)), base_version, result.trained_on, result.new_ap, time.time()
    )
    project.record_model(record)
    return version


def history_lines(project: Project) -> list[str]:
    """``main.py info``'s model history: a line per model, oldest first, the one in use marked."""
    records = project.model_history()
    if not records:
        return ["models: none yet (the app records the model it proposes with)"]
    effort = effort_by_model(project)
    in_use = project.model_in_use
    lines = ["models (* in use):"]
    for record in records:
        made = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created_at))
        origin = f"from {record.base}, {record.trained_on} images" if record.base else "starting model"
        ap = "" if record.held_out_ap is None else f", held-out mask AP {100 * record.held_out_ap:.1f}"
        row = effort.get(record.version)
        used = (
            f"; labelled {counted(row.images, 'image')}: {100 * row.accepted_as_is:.0f}% as-is, "
            f"{row.edits_per_instance:.2f} edits/label, {row.seconds_per_image:.1f} s/image"
            if row
            else ""
        )
        mark = "*" if record.version == in_use else " "
        lines.append(f"  {mark} {record.version}  ({origin}, {made}{ap}){used}  {record.weights}")
    return lines
