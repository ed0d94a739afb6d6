"""The project file's SQLite schema: its tables, the migrations that build and upgrade them, how
the file is created and opened, and how its rows become records (``annotator.records``). No Qt.
(docs/decisions/0004-project-store.md)
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from annotator.project_file import (
    DamagedRow,
    ProjectDamaged,
    ProjectReadOnly,
    begin_write,
    connect,
    database_error,
    one_line,
    open_connection,
    while_busy,
)
from annotator.records import Category, ImageRecord, Instance, ModelRecord, ReviewState, Source
from model.errors import InputError

# Ids are SQLite rowids from 1 to MAX_ID. SQLite's own limit is 2**63 - 1, but a project whose
# largest id is that can add nothing more (AUTOINCREMENT has no next id), and JSON readers that
# hold numbers as doubles (JavaScript, jq) change ids above 2**53 - 1: an export must stay exact.
MAX_ID = 2**53 - 1

# Each entry upgrades the schema by one version; PRAGMA user_version counts the entries applied.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE images (
        id INTEGER PRIMARY KEY AUTOINCREMENT CHECK (id >= 1),
        file_name TEXT NOT NULL UNIQUE,
        width INTEGER NOT NULL CHECK (width > 0),
        height INTEGER NOT NULL CHECK (height > 0),
        sha256 TEXT NOT NULL,
        state INTEGER NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 3),
        updated_at REAL NOT NULL
    );
    CREATE INDEX images_by_state ON images (state, id);
    CREATE TABLE categories (
        id INTEGER PRIMARY KEY CHECK (id >= 1),
        name TEXT NOT NULL UNIQUE,
        supercategory TEXT NOT NULL DEFAULT '',
        color TEXT NOT NULL,
        keypoints TEXT NOT NULL DEFAULT '[]',
        skeleton TEXT NOT NULL DEFAULT '[]'
    );
    CREATE TABLE instances (
        -- AUTOINCREMENT: a deleted instance's id is never handed to a new one, so an undo record
        -- or an exported annotation id can never come to name another instance
        id INTEGER PRIMARY KEY AUTOINCREMENT CHECK (id >= 1),
        image_id INTEGER NOT NULL REFERENCES images (id) ON DELETE CASCADE,
        category_id INTEGER NOT NULL REFERENCES categories (id),
        rle_counts TEXT,
        bbox TEXT NOT NULL,
        area REAL NOT NULL,
        keypoints TEXT,
        score REAL,
        source TEXT NOT NULL CHECK (source IN ('model', 'human')),
        model_version TEXT,
        iscrowd INTEGER NOT NULL DEFAULT 0,
        polygons TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX instances_by_image ON instances (image_id);
    CREATE INDEX instances_by_category ON instances (category_id);
    """,
    # The effort a person spends (issue 12) and the models the project produced (issue 13):
    # edits made to an instance after it was created, seconds of active work on an image, when
    # it was last marked done (NULL while not done), and one row per model.
    """
    ALTER TABLE instances ADD COLUMN edits INTEGER NOT NULL DEFAULT 0 CHECK (edits >= 0);
    ALTER TABLE images ADD COLUMN active_seconds REAL NOT NULL DEFAULT 0 CHECK (active_seconds >= 0);
    ALTER TABLE images ADD COLUMN done_at REAL;
    CREATE INDEX images_by_done_at ON images (done_at);
    CREATE TABLE models (
        version TEXT PRIMARY KEY,
        weights TEXT NOT NULL,
        base TEXT,
        trained_on INTEGER NOT NULL DEFAULT 0 CHECK (trained_on >= 0),
        held_out_ap REAL,
        created_at REAL NOT NULL
    );
    """,
    # Categories the model brought in that no person has used yet (issue 16): a proposal of a class
    # the project lacks adds its category as proposed; a label of it that a person keeps makes it an
    # ordinary category. Existing categories were all a person's to keep.
    """
    ALTER TABLE categories ADD COLUMN proposed INTEGER NOT NULL DEFAULT 0 CHECK (proposed IN (0, 1));
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Brings the file's schema to ``SCHEMA_VERSION``, one migration a transaction.

    Raises:
        InputError: the file comes from a newer program, or is an SQLite file of something else.
    """
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise InputError(
            path,
            f"project schema version {version} is newer than this program's ({SCHEMA_VERSION}); update the program",
        )
    if version == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise InputError(path, "an SQLite file, but not a project file")
    for number in range(version, SCHEMA_VERSION):
        begin_write(db, path)
        try:
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {number + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def create_database(path: Path, meta: dict[str, str]) -> sqlite3.Connection:
    """A new project database at ``path``, where no file is yet (``project_file.new_project_file``
    gives one): the current schema, ``meta`` written. It keeps SQLite's rollback journal while it is
    filled, so that everything is in the file itself when :func:`finish_database` turns on WAL."""
    db = connect(path, mode="rwc")
    try:
        migrate(db, path)
        begin_write(db, path)
        db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", list(meta.items()))
        db.execute("COMMIT")
    except BaseException:
        db.close()
        raise
    return db


def finish_database(db: sqlite3.Connection) -> None:
    """Turns on the WAL journal of a database :func:`create_database` made (kept in the file: it
    opens in WAL from now on, so that readers and the one writer do not wait for each other)."""
    db.execute("PRAGMA journal_mode = WAL")


def open_database(path: Path) -> tuple[sqlite3.Connection, bool]:
    """The project database at ``path``, its schema brought up to date, and whether it is open
    read-only (the file or its folder cannot be written: ``project_file.open_connection``).
    Nothing is created or written unless the file is a project of an older schema.

    Raises:
        InputError: no file, not a project file, one from a newer program; ProjectDamaged,
            ProjectReadOnly (an older schema that cannot be upgraded here), ProjectBusy.
    """
    db, read_only = open_connection(path)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version < 0:
            raise ProjectDamaged(path, f"damaged: its header gives schema version {version}")
        if version == 0:  # opening never builds a schema: only creating a project does
            raise InputError(path, "an SQLite file, but not a project file")
        if version < SCHEMA_VERSION and read_only:
            raise ProjectReadOnly(
                path,
                "read-only: it was written by an older version of this program; open it once where it can be "
                "written so that it is brought up to date",
            )
        migrate(db, path)
        if not read_only and db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            while_busy(path, lambda: db.execute("PRAGMA journal_mode = WAL"))
        if db.execute("SELECT 1 FROM meta WHERE key = 'image_root'").fetchone() is None:
            raise InputError(path, "not a project file (no image root recorded)")
    except BaseException as error:
        db.close()
        if isinstance(error, (sqlite3.DatabaseError, DamagedRow)):
            raise database_error(path, error) from None
        raise
    return db, read_only


def stored_json(value: Any) -> str:
    """A value as the store keeps JSON text: compact, and never NaN or infinity (not JSON)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


# -- rows and records ------------------------------------------------------------------------------

INSTANCE_COLUMNS = (
    "id, image_id, category_id, rle_counts, bbox, area, keypoints, score, source, model_version,"
    " iscrowd, polygons, created_at, updated_at, edits"
)
# The instance columns and, last, the size of the instance's image (an RLE needs it).
SELECT_INSTANCES = (
    "SELECT "
    + ", ".join(f"instances.{c.strip()}" for c in INSTANCE_COLUMNS.split(","))
    + ", images.height, images.width FROM instances JOIN images ON images.id = instances.image_id"
)


CATEGORY_COLUMNS = "id, name, supercategory, color, keypoints, skeleton, proposed"
IMAGE_COLUMNS = "id, file_name, width, height, sha256, state, active_seconds, done_at"
MODEL_COLUMNS = "version, weights, base, trained_on, held_out_ap, created_at"


# A flipped bit in a stored value (SQLite keeps no checksums of values) can make it another type
# or break its JSON: the converters below raise DamagedRow naming the row instead.
_UNREADABLE = (ValueError, TypeError, KeyError, IndexError, OverflowError)


def _unreadable(table: str, row: Sequence[Any], error: Exception, image_id: Any = None) -> DamagedRow:
    return DamagedRow(table, row[0] if row else None, f"its stored values cannot be read ({one_line(error)})", image_id)


def _whole(value: Any) -> int:
    if not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not text")
    return value


def image_from_row(row: Sequence[Any]) -> ImageRecord:
    try:
        return ImageRecord(
            _whole(row[0]),
            _text(row[1]),
            _whole(row[2]),
            _whole(row[3]),
            _text(row[4]),
            ReviewState(row[5]),
            row[6],
            row[7],
        )
    except _UNREADABLE as error:
        raise _unreadable("images", row, error) from None


def model_from_row(row: Sequence[Any]) -> ModelRecord:
    return ModelRecord(*row)


def category_from_row(row: Sequence[Any]) -> Category:
    try:
        return Category(
            _whole(row[0]),
            _text(row[1]),
            _text(row[2]),
            _text(row[3]),
            tuple(_text(name) for name in json.loads(row[4])),
            tuple((_whole(a), _whole(b)) for a, b in json.loads(row[5])),
            bool(_whole(row[6])),
        )
    except _UNREADABLE as error:
        raise _unreadable("categories", row, error) from None


def instance_from_row(row: Sequence[Any]) -> Instance:
    height, width = row[15], row[16]
    try:
        return Instance(
            id=_whole(row[0]),
            image_id=_whole(row[1]),
            category_id=_whole(row[2]),
            rle=None if row[3] is None else {"size": [height, width], "counts": _text(row[3])},
            bbox=tuple(json.loads(row[4])),
            area=row[5],
            keypoints=None if row[6] is None else tuple(json.loads(row[6])),
            score=row[7],
            source=Source(row[8]),
            model_version=row[9],
            iscrowd=bool(row[10]),
            polygons_json=row[11],
            created_at=row[12],
            updated_at=row[13],
            edits=row[14],
        )
    except _UNREADABLE as error:
        raise _unreadable("instances", row, error, row[1]) from None


def instance_filter(
    states: Iterable[ReviewState] | None, image_ids: tuple[int, int] | None, min_proposal_score: float
) -> tuple[str, list[Any]]:
    """The WHERE clause (over instances joined with images) and its parameters."""
    conditions, parameters = [], []
    if states is not None:
        wanted = [int(s) for s in states]
        conditions.append(f"images.state IN ({','.join('?' * len(wanted)) or 'NULL'})")
        parameters += wanted
    if image_ids is not None:
        conditions.append("instances.image_id BETWEEN ? AND ?")
        parameters += list(image_ids)
    if min_proposal_score == math.inf:
        conditions.append(f"instances.source != '{Source.MODEL}'")
    elif min_proposal_score > -math.inf:
        conditions.append(f"(instances.source != '{Source.MODEL}' OR instances.score >= ?)")
        parameters.append(float(min_proposal_score))
    return (f" WHERE {' AND '.join(conditions)}" if conditions else ""), parameters
