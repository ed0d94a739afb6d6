"""The project file as programs find it: shared with another program that is writing, read-only,
or damaged. How a project file is connected to, waited for, created and published, and what a
person is told when it cannot be used. No Qt. (docs/decisions/0004-project-store.md)

- **Busy.** One program writes at a time (SQLite's write lock, taken by ``BEGIN IMMEDIATE``). A
  lock held briefly is waited for silently; one held longer (a long import or proposal batch
  elsewhere) is announced once ("waiting for another program using P.annot…") and waited for up
  to :func:`busy_wait_seconds`; then :class:`ProjectBusy` says so in one line.
- **Read-only.** A file or folder that cannot be written (mode 0444, a read-only folder or mount)
  opens read-only (SQLite ``mode=ro``; ``immutable=1`` where the ``-shm`` index cannot be made
  and no ``-wal`` holds changes), and a change asked of it raises :class:`ProjectReadOnly`.
- **Damaged.** Opening never writes to a file it does not recognise and never creates one: only
  :func:`new_project_file` (``main.py new``, an import into a new project) makes project files,
  and they appear whole or not at all. SQLite's errors about a damaged file become
  :class:`ProjectDamaged`, naming the file and, where the reader knows it, the row.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from model.errors import InputError

T = TypeVar("T")

SQLITE_HEADER = b"SQLite format 3\x00"
# How long a program waits for another to release a project it is writing to, in seconds, unless
# the environment variable BUSY_WAIT_VARIABLE says otherwise (tests, scripts that should not wait).
BUSY_WAIT_SECONDS = 60.0
BUSY_WAIT_VARIABLE = "ANNOTATOR_BUSY_WAIT"
# A lock released within this many seconds is waited for without a word.
QUIET_WAIT_SECONDS = 1.0


class ProjectBusy(InputError):
    """Another program kept the project locked for longer than :func:`busy_wait_seconds`."""


class ProjectReadOnly(InputError):
    """A change asked of a project that can only be read; ``problem`` starts "read-only: "."""


class ProjectDamaged(InputError):
    """The file is a damaged project; ``problem`` starts "damaged: " and names what SQLite or
    the reader found (the row, where it knows it)."""


class ProjectExists(InputError):
    """A project file appeared at the path while a new one was being made there."""


class DamagedRow(ValueError):
    """A row whose stored values cannot be what the store wrote: ``table`` and ``row_id`` name it,
    ``image_id`` the image of an instance."""

    def __init__(self, table: str, row_id: object, problem: str, image_id: object = None) -> None:
        self.table, self.row_id, self.image_id, self.problem = table, row_id, image_id, problem
        super().__init__(f"{self.where}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled with its fields: it crosses from an export's worker process
        return type(self), (self.table, self.row_id, self.problem, self.image_id)

    @property
    def where(self) -> str:
        what = {"images": "image", "categories": "category", "instances": "instance", "models": "model"}
        where = f"{what.get(self.table, self.table)} {self.row_id}"
        return where + (f" (on image {self.image_id})" if self.image_id is not None else "")


def busy_wait_seconds() -> float:
    """How long to wait for a project another program is writing to (``BUSY_WAIT_SECONDS``, or
    the environment's ``ANNOTATOR_BUSY_WAIT`` in seconds)."""
    try:
        return max(0.0, float(os.environ[BUSY_WAIT_VARIABLE]))
    except (KeyError, ValueError):
        return BUSY_WAIT_SECONDS


def _tell_on_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# Where "waiting for another program…" goes; the app may point it at its status bar.
announce_waiting: Callable[[str], None] = _tell_on_stderr


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def is_busy(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and (
        "database is locked" in str(error) or "database is busy" in str(error)
    )


def while_busy(path: Path, attempt: Callable[[], T]) -> T:
    """``attempt()``, tried again while another program holds the lock it needs: each try waits
    ``QUIET_WAIT_SECONDS`` inside SQLite (the connection's busy timeout); after the first, the
    wait is announced, and after :func:`busy_wait_seconds` in all :class:`ProjectBusy` ends it."""
    started, announced = time.monotonic(), False
    limit = busy_wait_seconds()
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as error:
            if not is_busy(error):
                raise
        waited = time.monotonic() - started
        if waited >= limit:
            raise ProjectBusy(
                path, f"busy: another program kept it locked for {waited:.0f} s; try again when it is done"
            ) from None
        if not announced:
            announce_waiting(f"waiting for another program using {path}… (up to {limit:g} s)")
            announced = True
        time.sleep(min(0.05, max(0.0, limit - waited)))  # a try that failed at once must not spin


def begin_write(db: sqlite3.Connection, path: Path) -> None:
    """Starts a write transaction (``BEGIN IMMEDIATE``: the write lock is taken now, so what the
    transaction reads is what it writes on), waiting for another program that holds the lock."""
    while_busy(path, lambda: db.execute("BEGIN IMMEDIATE"))


# -- opening -------------------------------------------------------------------------------------------


def check_is_database(path: Path) -> None:
    """Refuses, without opening it with SQLite, what cannot be a project file: nothing there, a
    folder, an empty file (SQLite would turn it into a database), or one that is not SQLite's."""
    if not path.is_file():
        raise InputError(path, "no project file here")
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except OSError as error:
        raise InputError(path, f"cannot read the file ({error.strerror or error})") from None
    if not header:
        raise InputError(path, "an empty file, not a project file (only 'main.py new' makes one)")
    if header != SQLITE_HEADER:
        raise InputError(path, "not a project file (not an SQLite database)")


def _uri(path: Path, **parameters: str) -> str:
    query = "&".join(f"{key}={value}" for key, value in parameters.items())
    return f"{path.absolute().as_uri()}?{query}"


def connect(path: Path, **parameters: str) -> sqlite3.Connection:
    """A connection in the store's settings (foreign keys on, every commit durable), opened by
    URI so that it never creates the file (``mode=rw`` unless ``parameters`` say otherwise)."""
    parameters = {"mode": "rw", **parameters}
    # isolation_level=None: the store issues BEGIN/COMMIT itself, one transaction per edit.
    db = sqlite3.connect(
        _uri(path, **parameters), uri=True, isolation_level=None, check_same_thread=False, timeout=QUIET_WAIT_SECONDS
    )
    try:
        db.execute("PRAGMA foreign_keys = ON")
        if parameters["mode"] == "rw":
            db.execute("PRAGMA synchronous = FULL")
    except BaseException:
        db.close()
        raise
    return db


def _writable(path: Path) -> bool:
    """Whether this program may write the file and make its ``-wal`` and ``-shm`` beside it
    (``os.access`` also says no on a read-only mount)."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _probe(db: sqlite3.Connection, path: Path) -> None:
    """Reads the schema: SQLite opens files lazily, and this is where a locked, unreadable or
    damaged file shows."""
    while_busy(path, lambda: db.execute("SELECT count(*) FROM sqlite_master").fetchone())


def _has_changes_in_wal(path: Path) -> bool:
    wal = path.with_name(path.name + "-wal")
    return wal.is_file() and wal.stat().st_size > 0


def open_connection(path: Path) -> tuple[sqlite3.Connection, bool]:
    """A connection to the existing project file ``path`` and whether it is read-only: read-write
    where this program may write the file and its folder, else read-only (``immutable=1`` where
    not even SQLite's ``-shm`` index can be made and no ``-wal`` holds changes to read).

    Raises:
        InputError: what :func:`check_is_database` refuses; ProjectDamaged or ProjectReadOnly
            for a file SQLite cannot read; ProjectBusy.
    """
    check_is_database(path)
    attempts: list[dict[str, str]] = [{"mode": "rw"}] if _writable(path) else []
    attempts.append({"mode": "ro"})
    if not _has_changes_in_wal(path):
        attempts.append({"mode": "ro", "immutable": "1"})
    for number, parameters in enumerate(attempts):
        db = None
        try:
            db = connect(path, **parameters)
            _probe(db, path)
            return db, parameters["mode"] != "rw"
        except sqlite3.DatabaseError as error:
            if db is not None:
                db.close()
            # a read-only open of a WAL file needs its -shm index, or to make one beside it
            read_only_problem = isinstance(error, sqlite3.OperationalError) and (
                "readonly" in str(error) or (parameters["mode"] == "ro" and "unable to open" in str(error))
            )
            if read_only_problem and number + 1 < len(attempts):
                continue
            if read_only_problem:
                raise ProjectReadOnly(
                    path,
                    "read-only: its folder cannot be written and its -wal file holds changes not yet in the "
                    "file; open it once where it can be written",
                ) from None
            raise database_error(path, error) from None
        except BaseException:
            if db is not None:
                db.close()
            raise
    raise AssertionError("unreachable: the last attempt returns or raises")


# What SQLite says of a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB, a schema it cannot parse).
DAMAGE_SIGNS = ("malformed", "not a database", "unsupported file format", "corrupt")


def database_error(path: Path | str, error: BaseException) -> InputError:
    """The one line a person reads for an SQLite error (or a :class:`DamagedRow`) met while using
    the project file ``path``."""
    text = one_line(str(error))
    if isinstance(error, InputError):
        return error
    if isinstance(error, DamagedRow):
        return ProjectDamaged(path, f"damaged: {text} ('main.py check' lists all damage)")
    if is_busy(error):
        return ProjectBusy(path, "busy: another program keeps it locked; try again when it is done")
    if "readonly" in text:
        return ProjectReadOnly(path, "read-only: the file or its folder cannot be written")
    if "Could not decode to UTF-8" in text:
        return ProjectDamaged(path, f"damaged: stored text is not UTF-8 ({text}); 'main.py check' names the rows")
    if isinstance(error, sqlite3.DatabaseError) and any(sign in text for sign in DAMAGE_SIGNS):
        return ProjectDamaged(path, f"damaged: {text} ('main.py check' tells more)")
    return InputError(path, f"cannot use the project file ({text})")  # a full disk, an I/O error


# -- creating ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def new_project_file(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to build a new project in; when the block ends without an
    error it appears at ``path`` at once and whole (a hard link, which never replaces a file), or,
    if a file appeared there meanwhile, :class:`ProjectExists` is raised. Nothing of a failed
    build remains. The block must leave the temporary file closed, its ``-wal`` empty. A folder
    where no file can be made (read-only) raises InputError in one line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)
    except OSError as error:
        raise InputError(
            path, f"cannot make the project file here ({error.strerror or error}); its folder must be writable"
        ) from None
    os.close(fd)
    building = Path(name)
    building.unlink()  # SQLite makes it; an empty file would be a valid empty database too
    try:
        yield building
        _publish(building, path)
    finally:
        for leftover in (
            building,
            building.with_name(building.name + "-wal"),
            building.with_name(building.name + "-shm"),
        ):
            leftover.unlink(missing_ok=True)


def _publish(building: Path, path: Path) -> None:
    if _has_changes_in_wal(building):
        raise RuntimeError(f"{building}: the new project's -wal was not folded into the file")
    try:
        os.link(building, path)
    except FileExistsError:
        raise ProjectExists(path, "a file already exists here; open it instead of creating a project") from None
    except OSError:  # a file system without hard links: exclusive creation, then the content
        try:
            with path.open("xb"):
                pass
        except FileExistsError:
            raise ProjectExists(path, "a file already exists here; open it instead of creating a project") from None
        os.replace(building, path)
    with contextlib.suppress(OSError):  # the new name, durable like the commits (POSIX only)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
