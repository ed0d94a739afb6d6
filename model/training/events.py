"""Progress for machines and people: JSON lines on stdout (what the app reads from its training
process), a progress bar on stderr, TensorBoard scalars."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import IO, Any

from torch import Tensor


class EventLog:
    """Progress for machines and people: one JSON object a line on ``stream`` (stdout), a progress
    bar on stderr when that is a terminal, and TensorBoard scalars when tensorboard is installed.
    Silent on ranks other than 0."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        enabled: bool = True,
        tensorboard_dir: Path | None = None,
        progress_bar: bool | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.enabled = enabled
        self.tensorboard_dir = tensorboard_dir
        # None: a bar only when stderr is a terminal
        self.progress_bar = progress_bar
        self.bar: Any = None
        self.tensorboard: Any = None

    def start(self, total: int, initial: int = 0) -> None:
        """The progress bar (and TensorBoard writer) of a run of ``total`` iterations."""
        if not self.enabled:
            return
        from tqdm import tqdm

        disable = None if self.progress_bar is None else not self.progress_bar
        self.bar = tqdm(total=total, initial=initial, unit="it", file=sys.stderr, dynamic_ncols=True, disable=disable)
        if self.tensorboard_dir is not None and self.tensorboard is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                pass
            else:
                self.tensorboard = SummaryWriter(str(self.tensorboard_dir))

    def emit(self, event: str, **fields: Any) -> None:
        """One JSON line ``{"event": event, **fields}``; NaN and infinities become null."""
        if not self.enabled:
            return
        line = json.dumps(finite({"event": event, **fields}), allow_nan=False, default=_json_default)
        if self.bar is not None and not self.bar.disable:
            self.bar.clear()
        print(line, file=self.stream, flush=True)
        if self.bar is not None and not self.bar.disable:
            self.bar.refresh()

    def advance(self, iteration: int, loss: float | None = None) -> None:
        if self.bar is not None and not self.bar.disable:
            self.bar.update(iteration - self.bar.n)
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def scalars(self, iteration: int, values: dict[str, float], prefix: str = "") -> None:
        if self.tensorboard is not None:
            for key, value in values.items():
                if value is not None and math.isfinite(value):
                    self.tensorboard.add_scalar(prefix + key, value, iteration)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Tensor):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
