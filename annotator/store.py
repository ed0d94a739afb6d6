"""The project store: one SQLite file holding images, categories and instances. No Qt.

Every edit is one transaction, committed before the call returns (WAL journal, ``synchronous=FULL``):
a process killed at any moment loses no edit that had returned, and the file still opens
(docs/decisions/0004-project-store.md). Several edits that belong together (an import, a batch of
proposals) share one transaction through :meth:`Project.transaction`, so they land all or nothing.

Conventions: ids are SQLite rowids and start at 1; image file names are POSIX paths relative to the
project's image root; masks are COCO compressed RLE with ``str`` counts (see ``annotator.masks``);
boxes are ``(x, y, width, height)`` in pixels; keypoints are COCO's flat ``[x, y, v] * K``.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import os
import sqlite3
import time
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator, Literal, Sequence

import numpy as np

from annotator import masks
from model.errors import InputError

PROJECT_SUFFIX = ".annot"


class ReviewState(enum.IntEnum):
    UNLABELED = 0
    PROPOSED = 1
    IN_REVIEW = 2
    DONE = 3

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")

    @classmethod
    def from_label(cls, label: str) -> ReviewState:
        return cls[label.upper().replace(" ", "_").replace("-", "_")]


class Source(enum.StrEnum):
    MODEL = "model"
    HUMAN = "human"


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    supercategory: str = ""
    color: str = "#1f77b4"
    keypoints: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()  # 1-based keypoint indices, as in COCO

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)


@dataclass(frozen=True)
class ImageRecord:
    id: int
    file_name: str  # POSIX path relative to the image root
    width: int
    height: int
    sha256: str
    state: ReviewState


@dataclass(frozen=True)
class Instance:
    id: int
    image_id: int
    category_id: int
    rle: masks.RLE | None  # None for a box-only annotation
    bbox: tuple[float, float, float, float]
    area: float
    keypoints: tuple[float, ...] | None  # [x, y, v] * K, or None for a category without keypoints
    score: float | None
    source: Source
    model_version: str | None
    iscrowd: bool
    # The outline the mask was drawn as (JSON list of flat polygons), kept while the mask is
    # unchanged; held as stored text so that an export can write it without parsing it.
    polygons_json: str | None
    created_at: float
    updated_at: float

    @property
    def polygons(self) -> tuple[tuple[float, ...], ...] | None:
        return None if self.polygons_json is None else tuple(tuple(p) for p in json.loads(self.polygons_json))

    @property
    def mask(self) -> np.ndarray | None:
        """The ``H x W`` bool mask, or None for a box-only annotation."""
        return None if self.rle is None else masks.decode(self.rle)

    @property
    def keypoints_array(self) -> np.ndarray | None:
        """Keypoints as a ``K x 3`` float array of ``(x, y, v)``."""
        return None if self.keypoints is None else np.asarray(self.keypoints, dtype=np.float64).reshape(-1, 3)

    @property
    def num_keypoints(self) -> int:
        """Keypoints labelled (v > 0), COCO's ``num_keypoints``."""
        return 0 if self.keypoints is None else sum(1 for v in self.keypoints[2::3] if v > 0)


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
]
SCHEMA_VERSION = len(MIGRATIONS)

# Distinct, readable colours for new categories (Tableau 10), cycled by category id.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")

_INSTANCE_COLUMNS = (
    "id, image_id, category_id, rle_counts, bbox, area, keypoints, score, source, model_version,"
    " iscrowd, polygons, created_at, updated_at"
)
# The instance columns and, last, the size of the instance's image (an RLE needs it).
_SELECT_INSTANCES = (
    "SELECT " + ", ".join(f"instances.{c.strip()}" for c in _INSTANCE_COLUMNS.split(","))
    + ", images.height, images.width FROM instances JOIN images ON images.id = instances.image_id"
)


def check_file_name(file_name: str) -> str:
    """The normalised POSIX form of an image path relative to the image root.

    Raises ValueError for an empty, absolute or Windows-drive path, or one that climbs out of the
    root with ``..``: a label file must not reach files outside the folder the user chose.
    """
    if not isinstance(file_name, str) or not file_name.strip():
        raise ValueError("file name is empty")
    posix = file_name.replace("\\", "/")
    path = PurePosixPath(posix)
    if path.is_absolute() or (len(posix) > 1 and posix[1] == ":"):
        raise ValueError(f"file name {file_name!r} is absolute; it must be relative to the image root")
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            if not parts:
                raise ValueError(f"file name {file_name!r} climbs out of the image root with '..'")
            parts.pop()
        elif part != ".":
            parts.append(part)
    if not parts:
        raise ValueError(f"file name {file_name!r} names no file")
    return "/".join(parts)


def default_color(category_id: int) -> str:
    return PALETTE[(category_id - 1) % len(PALETTE)]


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


class Project:
    """An open project file. Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        self._depth = 0  # nesting of transaction(); only the outermost commits
        self._image_root = self._resolve_root(self._meta("image_root"))

    # -- opening --------------------------------------------------------------------------------

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per edit.
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA synchronous = FULL")
        return db

    @classmethod
    def create(cls, path: Path | str, image_root: Path | str) -> Project:
        """Creates a new, empty project file at ``path`` for images under ``image_root``."""
        path = Path(path)
        if path.exists():
            raise InputError(path, "a file already exists here; open it instead of creating a project")
        path.parent.mkdir(parents=True, exist_ok=True)
        stored_root = cls._stored_root(path, image_root)
        db = cls._connect(path)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            cls._migrate(db, path)
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("image_root", stored_root), ("created_at", repr(time.time()))],
            )
            db.execute("COMMIT")
        except BaseException:
            db.close()
            path.unlink(missing_ok=True)
            raise
        return cls(path, db)

    @classmethod
    def open(cls, path: Path | str) -> Project:
        """Opens an existing project file, upgrading an older schema in place."""
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "no project file here")
        try:
            db = cls._connect(path)
            db.execute("PRAGMA journal_mode = WAL")
            cls._migrate(db, path)
            if db.execute("SELECT 1 FROM meta WHERE key = 'image_root'").fetchone() is None:
                raise sqlite3.DatabaseError("no image root recorded")
        except sqlite3.DatabaseError as error:
            raise InputError(path, f"not a project file ({error})") from None
        return cls(path, db)

    @staticmethod
    def _migrate(db: sqlite3.Connection, path: Path) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise InputError(path, f"project schema version {version} is newer than this program's "
                                   f"({SCHEMA_VERSION}); update the program")
        if version == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise InputError(path, "an SQLite file, but not a project file")
        for number in range(version, SCHEMA_VERSION):
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {number + 1}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Groups the edits made inside into one transaction: all of them land, or none."""
        if self._depth == 0:
            self._db.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("ROLLBACK")
            raise
        self._depth -= 1
        if self._depth == 0:
            self._db.execute("COMMIT")

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def id_in_use(self, table: Literal["images", "categories", "instances"], row_id: int) -> bool:
        if table not in ("images", "categories", "instances"):
            raise ValueError(f"no table {table!r}")
        return self._db.execute(f"SELECT 1 FROM {table} WHERE id = ?", (row_id,)).fetchone() is not None

    def integrity_check(self) -> str:
        """SQLite's verdict on the file: ``"ok"`` when the file is sound."""
        return self._db.execute("PRAGMA integrity_check").fetchone()[0]

    # -- images ---------------------------------------------------------------------------------

    @staticmethod
    def _stored_root(path: Path, image_root: Path | str) -> str:
        """The image root as stored: relative to the project file's folder, so that a project
        and its images can move together."""
        image_root = Path(image_root).resolve()
        try:
            return os.path.relpath(image_root, path.parent.resolve())
        except ValueError:  # another drive on Windows
            return str(image_root)

    def set_image_root(self, image_root: Path | str) -> None:
        """Points the project at its images' new folder (they moved without the project file)."""
        stored = self._stored_root(self.path, image_root)
        with self.transaction():
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'image_root'", (stored,))
        self._image_root = self._resolve_root(stored)

    def _resolve_root(self, stored: str | None) -> Path:
        root = Path(stored or ".")
        return root if root.is_absolute() else (self.path.parent / root).resolve()

    @property
    def image_root(self) -> Path:
        return self._image_root

    def image_path(self, image: ImageRecord) -> Path:
        return self._image_root / image.file_name

    @staticmethod
    def _image(row: Sequence[Any]) -> ImageRecord:
        return ImageRecord(row[0], row[1], row[2], row[3], row[4], ReviewState(row[5]))

    def add_image(self, file_name: str, width: int, height: int, sha256: str,
                  state: ReviewState = ReviewState.UNLABELED, id: int | None = None) -> ImageRecord:
        file_name = check_file_name(file_name)
        with self.transaction():
            cursor = self._db.execute(
                "INSERT INTO images (id, file_name, width, height, sha256, state, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (id, file_name, int(width), int(height), sha256, int(state), time.time()),
            )
        return ImageRecord(cursor.lastrowid, file_name, int(width), int(height), sha256, ReviewState(state))

    def image(self, image_id: int) -> ImageRecord:
        row = self._db.execute(
            "SELECT id, file_name, width, height, sha256, state FROM images WHERE id = ?", (image_id,)
        ).fetchone()
        if row is None:
            raise KeyError(f"no image with id {image_id}")
        return self._image(row)

    def image_by_file_name(self, file_name: str) -> ImageRecord | None:
        row = self._db.execute(
            "SELECT id, file_name, width, height, sha256, state FROM images WHERE file_name = ?",
            (check_file_name(file_name),),
        ).fetchone()
        return None if row is None else self._image(row)

    def images(self, state: ReviewState | None = None) -> list[ImageRecord]:
        """Images in id order, optionally only those in one review state."""
        return list(self.iter_images(state))

    def iter_images(self, state: ReviewState | None = None,
                    states: Iterable[ReviewState] | None = None) -> Iterator[ImageRecord]:
        query = "SELECT id, file_name, width, height, sha256, state FROM images"
        wanted = [int(s) for s in (states or ([] if state is None else [state]))]
        if wanted:
            query += f" WHERE state IN ({','.join('?' * len(wanted))})"
        for row in self._db.execute(query + " ORDER BY id", wanted):
            yield self._image(row)

    def image_count(self) -> int:
        return self._db.execute("SELECT count(*) FROM images").fetchone()[0]

    def set_review_state(self, image_id: int, state: ReviewState) -> None:
        with self.transaction():
            cursor = self._db.execute(
                "UPDATE images SET state = ?, updated_at = ? WHERE id = ?",
                (int(state), time.time(), image_id),
            )
            if cursor.rowcount != 1:
                raise KeyError(f"no image with id {image_id}")

    def review_state_counts(self) -> dict[ReviewState, int]:
        counts = {state: 0 for state in ReviewState}
        for state, count in self._db.execute("SELECT state, count(*) FROM images GROUP BY state"):
            counts[ReviewState(state)] = count
        return counts

    # -- categories -----------------------------------------------------------------------------

    @staticmethod
    def _category(row: Sequence[Any]) -> Category:
        return Category(row[0], row[1], row[2], row[3], tuple(json.loads(row[4])),
                        tuple(tuple(pair) for pair in json.loads(row[5])))

    @staticmethod
    def _check_schema(keypoints: Sequence[str], skeleton: Sequence[Sequence[int]]) -> None:
        if len(set(keypoints)) != len(keypoints):
            raise ValueError("keypoint names must be unique")
        for pair in skeleton:
            if len(pair) != 2 or not all(isinstance(i, int) and 1 <= i <= len(keypoints) for i in pair):
                raise ValueError(f"skeleton edge {list(pair)} must be two keypoint numbers in 1..{len(keypoints)}")

    def _check_name(self, name: str, category_id: int) -> None:
        """A category's name: not empty, and no other category's."""
        if not name.strip():
            raise ValueError("category name is empty")
        other = self._db.execute("SELECT id FROM categories WHERE name = ? AND id != ?", (name, category_id)).fetchone()
        if other:
            raise ValueError(f"there is already a category named '{name}' (id {other[0]})")

    def add_category(self, name: str, supercategory: str = "", color: str | None = None,
                     keypoints: Sequence[str] = (), skeleton: Sequence[Sequence[int]] = (),
                     id: int | None = None) -> Category:
        if id is not None and id < 1:
            raise ValueError(f"category id must be at least 1, got {id}")
        self._check_schema(keypoints, skeleton)
        with self.transaction():
            if id is None:
                id = self._db.execute("SELECT coalesce(max(id), 0) + 1 FROM categories").fetchone()[0]
            category = Category(id, name, supercategory, color or default_color(id), tuple(keypoints),
                                tuple(tuple(int(i) for i in pair) for pair in skeleton))
            self._check_name(name, id)
            self._db.execute(
                "INSERT INTO categories (id, name, supercategory, color, keypoints, skeleton)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (category.id, category.name, category.supercategory, category.color,
                 _json(list(category.keypoints)), _json([list(p) for p in category.skeleton])),
            )
        return category

    def update_category(self, category_id: int, **changes: Any) -> Category:
        """Renames, recolours or edits the keypoint schema of a category.

        The keypoint names can change freely while their number stays the same; changing the
        number is refused while instances of the category hold keypoints.
        """
        with self.transaction():
            category = replace(self.category(category_id), **changes)
            category = replace(category, keypoints=tuple(category.keypoints),
                               skeleton=tuple(tuple(p) for p in category.skeleton))
            self._check_name(category.name, category_id)
            self._check_schema(category.keypoints, category.skeleton)
            if len(category.keypoints) != self.category(category_id).num_keypoints:
                used = self._db.execute(
                    "SELECT count(*) FROM instances WHERE category_id = ? AND keypoints IS NOT NULL",
                    (category_id,),
                ).fetchone()[0]
                if used:
                    raise ValueError(f"{used} instances of '{category.name}' hold keypoints; "
                                     "their number cannot change")
            self._db.execute(
                "UPDATE categories SET name = ?, supercategory = ?, color = ?, keypoints = ?, skeleton = ?"
                " WHERE id = ?",
                (category.name, category.supercategory, category.color, _json(list(category.keypoints)),
                 _json([list(p) for p in category.skeleton]), category_id),
            )
        return category

    def category(self, category_id: int) -> Category:
        row = self._db.execute(
            "SELECT id, name, supercategory, color, keypoints, skeleton FROM categories WHERE id = ?",
            (category_id,),
        ).fetchone()
        if row is None:
            raise KeyError(f"no category with id {category_id}")
        return self._category(row)

    def categories(self) -> list[Category]:
        return [self._category(row) for row in self._db.execute(
            "SELECT id, name, supercategory, color, keypoints, skeleton FROM categories ORDER BY id")]

    def category_by_name(self, name: str) -> Category | None:
        return next((c for c in self.categories() if c.name == name), None)

    def instance_counts_by_category(self, source: Source | None = None) -> dict[int, int]:
        """Instances per category id (every category, 0 where it has none); only those of one
        ``source`` when given (``Source.HUMAN``: the labels people drew, accepted or imported)."""
        counts = {category.id: 0 for category in self.categories()}
        where, parameters = ("", ()) if source is None else (" WHERE source = ?", (str(source),))
        for category_id, count in self._db.execute(
                f"SELECT category_id, count(*) FROM instances{where} GROUP BY category_id", parameters):
            counts[category_id] = count
        return counts

    # -- instances ------------------------------------------------------------------------------

    @staticmethod
    def _instance(row: Sequence[Any]) -> Instance:
        height, width = row[14], row[15]
        return Instance(
            id=row[0], image_id=row[1], category_id=row[2],
            rle=None if row[3] is None else {"size": [height, width], "counts": row[3]},
            bbox=tuple(json.loads(row[4])), area=row[5],
            keypoints=None if row[6] is None else tuple(json.loads(row[6])),
            score=row[7], source=Source(row[8]), model_version=row[9], iscrowd=bool(row[10]),
            polygons_json=row[11],
            created_at=row[12], updated_at=row[13],
        )

    def instances(self, image_id: int) -> list[Instance]:
        """The instances of one image, oldest first."""
        rows = self._db.execute(
            f"{_SELECT_INSTANCES} WHERE instances.image_id = ? ORDER BY instances.id", (image_id,))
        return [self._instance(row) for row in rows]

    def instance(self, instance_id: int) -> Instance:
        row = self._db.execute(f"{_SELECT_INSTANCES} WHERE instances.id = ?", (instance_id,)).fetchone()
        if row is None:
            raise KeyError(f"no instance with id {instance_id}")
        return self._instance(row)

    @staticmethod
    def _instance_filter(states: Iterable[ReviewState] | None, image_ids: tuple[int, int] | None,
                         min_proposal_score: float) -> tuple[str, list[Any]]:
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

    def iter_instances(self, states: Iterable[ReviewState] | None = None,
                       image_ids: tuple[int, int] | None = None,
                       min_proposal_score: float = -math.inf) -> Iterator[Instance]:
        """Every instance, ordered by image then id, streamed (bounded memory); optionally only
        those of images in the given review states, or with ids in the inclusive range
        ``image_ids = (first, last)``. Model proposals scoring under ``min_proposal_score`` are
        left out (``math.inf``: every proposal)."""
        where, parameters = self._instance_filter(states, image_ids, min_proposal_score)
        query = f"{_SELECT_INSTANCES}{where} ORDER BY instances.image_id, instances.id"
        # A cursor of its own: the caller may read other tables while iterating.
        for row in self._db.cursor().execute(query, parameters):
            yield self._instance(row)

    def instance_count(self, states: Iterable[ReviewState] | None = None) -> int:
        """How many instances there are, or of images in the given review states."""
        where, parameters = self._instance_filter(states, None, -math.inf)
        joined = " JOIN images ON images.id = instances.image_id" if where else ""  # the join costs at 1M rows
        query = f"SELECT count(*) FROM instances{joined}{where}"
        return self._db.execute(query, parameters).fetchone()[0]

    def _shape(self, image: ImageRecord, category: Category, *, mask: np.ndarray | None,
               rle: masks.RLE | None, polygons: Sequence[Sequence[float]] | None,
               bbox: Sequence[float] | None, keypoints: Sequence[float] | np.ndarray | None,
               ) -> dict[str, Any]:
        """Columns describing an instance's geometry, checked against its image and category."""
        given = [name for name, value in (("mask", mask), ("rle", rle), ("polygons", polygons))
                 if value is not None]
        if len(given) > 1:
            raise ValueError(f"give one of mask, rle or polygons, not {' and '.join(given)}")
        size = [image.height, image.width]
        if mask is not None:
            if tuple(mask.shape) != tuple(size):
                raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]}, image is {image.width}x{image.height}")
            rle = masks.encode(mask)
        elif polygons is not None:
            polygons = [[float(v) for v in polygon] for polygon in polygons]
            for polygon in polygons:
                if len(polygon) < 6 or len(polygon) % 2:
                    raise ValueError("a polygon needs at least 3 points as [x1, y1, x2, y2, ...]")
            rle = masks.from_polygons(polygons, image.height, image.width)
        elif rle is not None:
            if list(rle["size"]) != size:
                raise ValueError(f"mask size {list(rle['size'])} differs from the image's {size}")
            masks.check(rle)
        if rle is not None:
            rle = {"size": size, "counts": rle["counts"]}
            box, area = masks.bbox(rle), float(masks.area(rle))
        elif bbox is not None:
            box = tuple(float(v) for v in bbox)
            area = box[2] * box[3]
        else:
            raise ValueError("an instance needs a mask, polygons or at least a box")
        flat = None
        if keypoints is not None:
            flat = [float(v) for v in np.asarray(keypoints, dtype=np.float64).reshape(-1)]
            if len(flat) != 3 * category.num_keypoints:
                raise ValueError(f"category '{category.name}' has {category.num_keypoints} keypoints; "
                                 f"got {len(flat) // 3 if len(flat) % 3 == 0 else len(flat) / 3:g}")
        elif category.num_keypoints:
            flat = [0.0] * (3 * category.num_keypoints)
        return {
            "rle_counts": None if rle is None else rle["counts"],
            "bbox": _json(list(box)),
            "area": area,
            "keypoints": None if flat is None else _json(flat),
            "polygons": None if polygons is None else _json(polygons),
        }

    def add_instance(self, image_id: int, category_id: int, *, mask: np.ndarray | None = None,
                     rle: masks.RLE | None = None, polygons: Sequence[Sequence[float]] | None = None,
                     bbox: Sequence[float] | None = None,
                     keypoints: Sequence[float] | np.ndarray | None = None, score: float | None = None,
                     source: Source = Source.HUMAN, model_version: str | None = None,
                     iscrowd: bool = False, id: int | None = None) -> Instance:
        """Adds one instance; its box and area are computed from the mask when there is one."""
        image, category = self.image(image_id), self.category(category_id)
        columns = self._shape(image, category, mask=mask, rle=rle, polygons=polygons, bbox=bbox,
                              keypoints=keypoints)
        now = time.time()
        with self.transaction():
            cursor = self._db.execute(
                f"INSERT INTO instances ({_INSTANCE_COLUMNS}) VALUES ({', '.join('?' * 14)})",
                (id, image_id, category_id, columns["rle_counts"], columns["bbox"], columns["area"],
                 columns["keypoints"], score, str(Source(source)), model_version, int(iscrowd),
                 columns["polygons"], now, now),
            )
        return self.instance(cursor.lastrowid)

    def update_instance(self, instance_id: int, *, category_id: int | None = None,
                        mask: np.ndarray | None = None, rle: masks.RLE | None = None,
                        polygons: Sequence[Sequence[float]] | None = None,
                        keypoints: Sequence[float] | np.ndarray | None = None,
                        source: Source | None = Source.HUMAN) -> Instance:
        """Changes an instance's category, mask or keypoints. An edit by a person makes the
        instance ``source=human`` (pass ``source=None`` to keep the recorded source)."""
        old = self.instance(instance_id)
        category = self.category(category_id if category_id is not None else old.category_id)
        if keypoints is None and old.keypoints is not None and category.num_keypoints == len(old.keypoints) // 3:
            keypoints = old.keypoints
        geometry_given = mask is not None or rle is not None or polygons is not None
        columns = self._shape(
            self.image(old.image_id), category, mask=mask,
            rle=rle if geometry_given else old.rle,
            polygons=polygons, bbox=None if geometry_given else old.bbox, keypoints=keypoints,
        )
        if not geometry_given:
            columns["polygons"] = old.polygons_json
        with self.transaction():
            self._db.execute(
                "UPDATE instances SET category_id = ?, rle_counts = ?, bbox = ?, area = ?, keypoints = ?,"
                " polygons = ?, source = ?, updated_at = ? WHERE id = ?",
                (category.id, columns["rle_counts"], columns["bbox"], columns["area"], columns["keypoints"],
                 columns["polygons"], str(source or old.source), time.time(), instance_id),
            )
        return self.instance(instance_id)

    def delete_instance(self, instance_id: int) -> Instance:
        """Deletes an instance and returns it as it was, so that undo can :meth:`restore_instance`."""
        with self.transaction():
            old = self.instance(instance_id)
            self._db.execute("DELETE FROM instances WHERE id = ?", (instance_id,))
        return old

    def restore_instance(self, instance: Instance) -> Instance:
        """Puts a deleted (or an earlier version of an) instance back exactly, under its own id."""
        with self.transaction():
            self._db.execute("DELETE FROM instances WHERE id = ?", (instance.id,))
            self._db.execute(
                f"INSERT INTO instances ({_INSTANCE_COLUMNS}) VALUES ({', '.join('?' * 14)})",
                (instance.id, instance.image_id, instance.category_id,
                 None if instance.rle is None else instance.rle["counts"], _json(list(instance.bbox)),
                 instance.area, None if instance.keypoints is None else _json(list(instance.keypoints)),
                 instance.score, str(instance.source), instance.model_version, int(instance.iscrowd),
                 instance.polygons_json,
                 instance.created_at, instance.updated_at),
            )
        return self.instance(instance.id)
