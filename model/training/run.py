"""``main.py train``: one process's part of a training run, from the COCO file to the final weights."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from model.errors import InputError
from model.evaluation import format_summary
from model.training.comm import Distributed, RunStopped, run_stopped_if_a_peer_ends
from model.training.events import EventLog
from model.training.loop import TrainResult, train
from model.training.options import TrainOptions
from model.training.setup import prepare_run


def run_training(
    coco_file: Path | str,
    image_root: Path | str,
    run_dir: Path | str,
    options: TrainOptions,
    *,
    weights: str,
    architecture: str | None = None,
    iterations: int | None = None,
    epochs: float | None = None,
    min_size: Sequence[int] | None = None,
    max_size: int | None = None,
    resume: bool = False,
    device: str = "auto",
) -> TrainResult:
    """``main.py train``: this process's part of a run (one rank under ``torchrun``), from the COCO
    file to ``run_dir/model_final.safetensors``. Events go to stdout (rank 0 only) and end in
    ``done`` or ``error``; notes for people go to stderr. The run's length and image sizes are as
    ``prepare_run`` takes them; ``resume`` continues the run in ``run_dir`` with that run's settings.

    Raises:
        InputError: naming the file that cannot be used (the COCO file, an image, the weights, the
            run folder), found before training or during it; checkpoints already written stay.
        RunStopped: under torchrun, another rank ended first.
    """
    distributed = Distributed.from_environment()
    run_dir = Path(run_dir)
    events = EventLog(enabled=distributed.is_main, tensorboard_dir=run_dir / "tensorboard")
    started = time.monotonic()
    try:
        with run_stopped_if_a_peer_ends(distributed):
            run = prepare_run(
                coco_file,
                image_root,
                run_dir,
                options,
                weights=weights,
                architecture=architecture,
                iterations=iterations,
                epochs=epochs,
                min_size=min_size,
                max_size=max_size,
                resume=resume,
                world_size=distributed.world_size,
            )
            chosen = distributed.device(device)
            distributed.init(chosen)
            print(f"rank {distributed.rank}/{distributed.world_size}: {run.describe(chosen)}", file=sys.stderr)
            if distributed.is_main:
                for line in [f"warning: {w}" for w in run.warnings] + run.notes:
                    print(line, file=sys.stderr)
            # AP before training says something only of weights that were trained
            result = train(
                run.model,
                run.train_data,
                run.val_data,
                run_dir,
                run.options,
                device=chosen,
                distributed=distributed,
                events=events,
                resume=run.resume,
                evaluate_before=weights != "none",
            )
        seconds = time.monotonic() - started
        done = {"path": result.weights, "checkpoint": result.checkpoint, "iterations": result.iterations}
        events.emit("done", **done, elapsed_s=round(seconds, 1), **result.evaluation)
        if distributed.is_main:  # for a person at a terminal: where the model went and how it scores
            took = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
            print(f"done in {took}: {result.weights}", file=sys.stderr)
            if result.evaluation:
                table = format_summary(result.evaluation)
                print(f"AP on the {len(run.val_data.images)} held-out image(s):\n{table}", file=sys.stderr)
        return result
    except Exception as error:
        one_line = isinstance(error, (InputError, RunStopped))
        events.emit("error", message=str(error) if one_line else f"{type(error).__name__}: {error}")
        raise
    finally:
        events.close()
        distributed.close()
