"""The one error a user sees for bad input: it names the file and the problem, in one line.

Every layer raises it (or a subclass naming where it was found) for a file, an entry or a value
it cannot use, so that the command line and the app print ``str(error)`` as it is, and nothing
re-wraps it on the way up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class InputError(ValueError):
    """Bad input (a file, a field, a value, a weights name). ``str(error)`` is ``"<path>: <problem>"``.

    Raised before anything is written, so a caller that catches it knows the project is unchanged.
    ``path`` is the file, folder, weights name or URL as the user gave it.
    """

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled with its fields: it crosses from a data-loader worker as an item (model.data.collate)
        return type(self), (self.path, self.problem)
