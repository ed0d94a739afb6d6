"""What COCO and labelme imports share: reading JSON with clear errors (regular files only, of at
most ``MAX_JSON_BYTES``), checking numbers, adding the image files a label file names, and
writing files atomically. No Qt.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from annotator.store import ImageRecord, Project, check_file_name
from model.errors import InputError
from model.files import give_ordinary_permissions
from model.images import DEFAULT_MAX_PIXELS, ImageReadError, probe_image

# How large a JSON file an import reads (bytes): COCO's train2017 instances file is 448 MiB and
# LVIS's 1.1 GiB; parsed, a file takes several times its size in memory.
MAX_JSON_BYTES = 2 * 1024**3

Duplicates = Literal["skip", "keep"]


@dataclass
class ImportReport:
    """What an import added; ``duplicates`` counts the instances left out because the image held
    them already; ``warnings`` are lines for the user about what was left out or changed."""

    images: int = 0
    categories: int = 0
    instances: int = 0
    duplicates: int = 0
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        skipped = f"; skipped {self.duplicates} already in the project" if self.duplicates else ""
        return f"imported {self.images} images, {self.categories} categories, {self.instances} instances{skipped}"


def _read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path``, refusing anything but a regular file of at most ``max_bytes``: a
    FIFO would block forever and /dev/zero never ends."""
    try:
        # O_NONBLOCK: opening a FIFO that replaced the file since it was looked at does not block
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except IsADirectoryError:
        raise InputError(path, "is a folder, not a JSON file") from None
    except OSError as error:
        raise InputError(path, f"cannot read the file ({error.strerror})") from None
    with os.fdopen(fd, "rb") as file:
        status = os.fstat(fd)
        if stat.S_ISDIR(status.st_mode):
            raise InputError(path, "is a folder, not a JSON file")
        if not stat.S_ISREG(status.st_mode):
            raise InputError(path, "not a regular file (a device, FIFO or socket); nothing was read")
        if status.st_size > max_bytes:
            raise InputError(path, f"{status.st_size:,} bytes, over the limit of {max_bytes:,} for a JSON file")
        try:
            # the size it has now and one byte more, to notice growth: reading max_bytes + 1 would
            # reserve the whole limit's memory up front for every small file
            data = file.read(status.st_size + 1)
        except OSError as error:
            raise InputError(path, f"cannot read the file ({error.strerror})") from None
    if len(data) > status.st_size:  # it grew while being read
        raise InputError(path, "the file changed while it was read; try again")
    return data


# A \uD800-\uDFFF escape: the only way a lone surrogate gets into parsed JSON text, since the
# bytes are decoded as UTF-8 first. Lone surrogates cannot be stored or printed.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def read_json(path: Path, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON value of the UTF-8 file ``path`` (a regular file of at most ``max_bytes``).

    Raises:
        InputError: in one line, for a missing, special, oversized or undecodable file, JSON
            that does not parse, nests too deeply or holds an integer of more than 4,300 digits,
            and text with a lone surrogate escape (``"\\ud800"``).
    """
    data = _read_regular_file(path, max_bytes)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(path, "not a text file (expected UTF-8 JSON)") from None
    try:
        value = json.loads(text)
        if _SURROGATE_ESCAPE.search(data):
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except json.JSONDecodeError as error:
        raise InputError(path, f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})") from None
    except RecursionError:
        raise InputError(path, "JSON nested too deeply to read") from None
    except UnicodeEncodeError:
        raise InputError(
            path, "a string holds a lone surrogate (an escape like \\ud800 without its pair); not text"
        ) from None
    except ValueError:  # Python's limit on the digits of an integer it converts from text
        raise InputError(path, f"holds an integer of more than {sys.get_int_max_str_digits():,} digits") from None
    return value


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite JSON number, else None (also for booleans and for
    integers too large for a float)."""
    if not is_number(value):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def check_coordinates(
    values: Any, what: str, problem: Callable[[str], InputError], negative: bool = False
) -> list[float]:
    """A flat list of finite numbers, non-negative unless ``negative``; else the error ``problem``
    builds."""
    if not isinstance(values, list) or not all(is_number(v) for v in values):
        raise problem(f"{what} must be a list of numbers")
    numbers = [finite_number(v) for v in values]
    for value, number in zip(values, numbers):
        if number is None:
            if isinstance(value, int):
                raise problem(f"{what} contains an integer too large to be a coordinate")
            raise problem(f"{what} contains {value}; coordinates must be finite")
        if number < 0 and not negative:
            raise problem(f"{what} contains the negative coordinate {number:g}")
    return numbers  # type: ignore[return-value]


def add_image_file(
    project: Project,
    file_name: str,
    source: Path,
    problem: Callable[[str], InputError],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    expected_size: tuple[int, int] | None = None,
    image_id: int | None = None,
) -> tuple[ImageRecord, bool]:
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
            raise problem(
                f"says {file_name} is {expected_size[0]}x{expected_size[1]}, the project has it as {size[0]}x{size[1]}"
            )
        return existing, False
    try:
        info = probe_image(project.image_root / file_name, max_pixels)
    except ImageReadError as error:
        raise InputError(source, f"{error.path}: {error.problem}") from None
    if expected_size is not None and expected_size != (info.width, info.height):
        raise problem(
            f"says {file_name} is {expected_size[0]}x{expected_size[1]}, "
            f"but the image file is {info.width}x{info.height}"
        )
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
