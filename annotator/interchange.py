"""What COCO and labelme imports share: reading JSON with clear errors, checking numbers, adding
the image files a label file names, and writing files atomically. No Qt.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

from model.errors import InputError
from annotator.store import ImageRecord, Project, check_file_name
from model.files import give_ordinary_permissions
from model.images import DEFAULT_MAX_PIXELS, ImageReadError, probe_image


@dataclass
class ImportReport:
    """What an import added; ``warnings`` are lines for the user about things left out."""

    images: int = 0
    categories: int = 0
    instances: int = 0
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"imported {self.images} images, {self.categories} categories, "
                f"{self.instances} instances")


def read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except IsADirectoryError:
        raise InputError(path, "is a folder, not a JSON file") from None
    except UnicodeDecodeError:
        raise InputError(path, "not a text file (expected UTF-8 JSON)") from None
    except OSError as error:
        raise InputError(path, f"cannot read the file ({error.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(path, f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})") from None


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_coordinates(values: Any, what: str, problem: Callable[[str], InputError]) -> list[float]:
    """A flat list of finite, non-negative numbers, or the error ``problem`` builds."""
    if not isinstance(values, list) or not all(is_number(v) for v in values):
        raise problem(f"{what} must be a list of numbers")
    for value in values:
        if not math.isfinite(value):
            raise problem(f"{what} contains {value}; coordinates must be finite")
        if value < 0:
            raise problem(f"{what} contains the negative coordinate {value:g}")
    return [float(v) for v in values]


def add_image_file(project: Project, file_name: str, source: Path, problem: Callable[[str], InputError],
                   max_pixels: int = DEFAULT_MAX_PIXELS, expected_size: tuple[int, int] | None = None,
                   image_id: int | None = None) -> tuple[ImageRecord, bool]:
    """The project's record for ``file_name``, adding it after checking that the file decodes.

    Returns ``(record, added)``. ``expected_size`` is ``(width, height)`` as the label file says;
    a mismatch is an error, since the labels would not line up with the pixels.
    """
    try:
        file_name = check_file_name(file_name)
    except ValueError as error:
        raise problem(str(error)) from None
    existing = project.image_by_file_name(file_name)
    if existing is not None:
        size = (existing.width, existing.height)
        if expected_size is not None and expected_size != size:
            raise problem(f"says {file_name} is {expected_size[0]}x{expected_size[1]}, "
                          f"the project has it as {size[0]}x{size[1]}")
        return existing, False
    try:
        info = probe_image(project.image_root / file_name, max_pixels)
    except ImageReadError as error:
        raise InputError(source, f"{error.path}: {error.problem}") from None
    if expected_size is not None and expected_size != (info.width, info.height):
        raise problem(f"says {file_name} is {expected_size[0]}x{expected_size[1]}, "
                      f"but the image file is {info.width}x{info.height}")
    record = project.add_image(file_name, info.width, info.height, info.sha256, id=image_id)
    return record, True


class AtomicWriter:
    """A text file that appears at ``path`` complete or not at all (temporary file + os.replace):
    a failed or interrupted write leaves the previous file intact."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> IO[str]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._temporary = Path(temporary)
        give_ordinary_permissions(fd)  # like the file it may replace, not mkstemp's 0600
        self._file = os.fdopen(fd, "w", encoding="utf-8", buffering=1 << 20)
        return self._file

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            if exc_type is None:
                self._file.flush()
                os.fsync(self._file.fileno())
            self._file.close()
            if exc_type is None:
                os.replace(self._temporary, self.path)
        finally:
            self._temporary.unlink(missing_ok=True)


def iter_json_array(items: Iterator[Any]) -> Iterator[str]:
    """Pieces of a JSON array written one element at a time (for streaming large exports)."""
    yield "["
    for index, item in enumerate(items):
        yield ("\n" if index == 0 else ",\n") + json.dumps(item, separators=(",", ":"), allow_nan=False)
    yield "]"
