"""The one error type a user sees: it names the file and the problem, in one line."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad input (a file, a field, a value). ``str(error)`` is ``"<file>: <problem>"``.

    Raised before anything is written, so a caller that catches it knows the project is unchanged.
    """

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem
