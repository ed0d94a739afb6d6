"""The project store: one SQLite file holding images, categories and instances. No Qt.

Every edit is one transaction, committed before the call returns (WAL journal, ``synchronous=FULL``):
a process killed at any moment loses no edit that had returned, and the file still opens
(docs/decisions/0004-project-store.md). Several edits that belong together (an import, a batch of
proposals) share one transaction through :meth:`Project.transaction`, so they land all or nothing.

Conventions: ids are SQLite rowids from 1 to ``MAX_ID``; image file names are POSIX paths relative
to the project's image root; masks are COCO compressed RLE with ``str`` counts (see
``annotator.masks``); boxes are ``(x, y, width, height)`` in pixels; keypoints are COCO's flat
``[x, y, v] * K``. The records read from the store are in ``annotator.records``, the schema in
``annotator.schema``, and the rules for an instance's mask, box and keypoints in
``annotator.geometry``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from annotator import masks
from annotator.category_table import PALETTE, CategoryTable, default_color
from annotator.damage import readable_instances
from annotator.geometry import check_id, instance_geometry
from annotator.image_table import ImageTable
from annotator.project_file import DamagedRow, ProjectExists, ProjectReadOnly, begin_write, new_project_file
from annotator.records import Category, ImageRecord, Instance, ModelRecord, ReviewState, Source, check_file_name
from annotator.schema import (
    INSTANCE_COLUMNS,
    MAX_ID,
    MIGRATIONS,
    MODEL_COLUMNS,
    SCHEMA_VERSION,
    SELECT_INSTANCES,
    create_database,
    database_error,
    finish_database,
    instance_filter,
    instance_from_row,
    model_from_row,
    open_database,
    stored_json,
)

__all__ = [
    "MAX_ID",
    "MIGRATIONS",
    "PALETTE",
    "PROJECT_SUFFIX",
    "SCHEMA_VERSION",
    "Category",
    "ImageRecord",
    "Instance",
    "ModelRecord",
    "Project",
    "ReviewState",
    "Source",
    "check_file_name",
    "default_color",
]

PROJECT_SUFFIX = ".annot"


class Project(CategoryTable, ImageTable):
    """An open project file. Use as a context manager, or call :meth:`close`. Its categories' part
    is :class:`annotator.category_table.CategoryTable`."""

    def __init__(self, path: Path, connection: sqlite3.Connection, read_only: bool = False) -> None:
        self.path = path
        self._db = connection
        self.read_only = read_only  # the file or its folder cannot be written: every change is refused
        self._depth = 0  # nesting of transaction(); only the outermost commits
        self.states_written = {}  # ImageTable.states_written
        self._image_root = self._resolve_root(self._meta("image_root"))

    # -- opening --------------------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: Path | str, image_root: Path | str, fill: Callable[[Project], object] | None = None
    ) -> Project:
        """Creates a new project file at ``path`` for images under ``image_root``, and opens it.

        It is built under a temporary name beside ``path`` and appears there whole, with what
        ``fill`` (an import) wrote into it, or not at all: when ``fill`` fails no file appears, and
        of two programs creating one project at once the second gets ``ProjectExists``.
        """
        path = Path(path)
        if path.exists():
            raise ProjectExists(path, "a file already exists here; open it instead of creating a project")
        meta = {"image_root": cls._stored_root(path, image_root), "created_at": repr(time.time())}
        with new_project_file(path) as building, cls(path, create_database(building, meta)) as project:
            if fill is not None:
                fill(project)
            finish_database(project._db)
        return cls.open(path)

    @classmethod
    def open(cls, path: Path | str, tidy: bool = True) -> Project:
        """Opens an existing project file, upgrading an older schema in place; read-only when the
        file or its folder cannot be written (``annotator.project_file``). A writable one is tidied
        (:meth:`drop_unused_proposed_categories`) unless ``tidy`` is False: for a connection beside
        the app's own, whose undo history may still need them, and ``main.py check``, which reads."""
        project = cls(Path(path), *open_database(Path(path)))
        try:
            if tidy and not project.read_only:
                project.drop_unused_proposed_categories()
        except BaseException as error:
            project.close()
            if isinstance(error, sqlite3.DatabaseError):
                raise database_error(project.path, error) from None
            raise
        return project

    def check_writable(self) -> None:
        """Raises ProjectReadOnly, in one line, when the project can only be read."""
        if self.read_only:
            raise ProjectReadOnly(
                self.path,
                "read-only: the file or its folder cannot be written; copy it somewhere writable to change it",
            )

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
            self.check_writable()
            begin_write(self._db, self.path)  # waits for another program's write, saying so
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
            try:
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")  # a commit that failed (a full disk) leaves none open
                raise

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``: it changes when another connection (another program)
        has committed to the file since it was last asked, never for this one's own commits. The
        app polls it to show what others write (``annotator.gui.project_watch``); it reads no page."""
        return self._db.execute("PRAGMA data_version").fetchone()[0]

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

    def integrity_problems(self, limit: int = 100) -> list[str]:
        """What SQLite finds wrong with the file's structure (``PRAGMA integrity_check``, at most
        ``limit`` lines) and rows that refer to a row that is not there (``foreign_key_check``);
        empty when sound. Values damaged inside a sound structure are ``annotator.project_check``'s."""
        found = [
            line for row in self._db.execute(f"PRAGMA integrity_check({int(limit)})") for line in row[0].splitlines()
        ]
        problems = [] if found == ["ok"] else found
        for table, row_id, parent, _ in self._db.execute("PRAGMA foreign_key_check"):
            problems.append(f"{table} row {row_id} refers to a row of {parent} that is not there")
        return problems

    def row_ids(self, table: Literal["images", "categories", "instances"]) -> Iterator[int]:
        """The ids of a table's rows, in order, without reading their other values (which may be
        damaged: see ``annotator.project_check``)."""
        if table not in ("images", "categories", "instances"):
            raise ValueError(f"no table {table!r}")
        for (row_id,) in self._db.cursor().execute(f"SELECT id FROM {table} ORDER BY id"):
            yield row_id

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

    # -- instances ------------------------------------------------------------------------------

    def instances(self, image_id: int) -> list[Instance]:
        """The instances of one image, oldest first."""
        rows = self._db.execute(f"{SELECT_INSTANCES} WHERE instances.image_id = ? ORDER BY instances.id", (image_id,))
        return [instance_from_row(row) for row in rows]

    def instance(self, instance_id: int) -> Instance:
        row = self._db.execute(f"{SELECT_INSTANCES} WHERE instances.id = ?", (instance_id,)).fetchone()
        if row is None:
            raise KeyError(f"no instance with id {instance_id}")
        return instance_from_row(row)

    def iter_instances(
        self,
        states: Iterable[ReviewState] | None = None,
        image_ids: tuple[int, int] | None = None,
        min_proposal_score: float = -math.inf,
        damaged: list[DamagedRow] | None = None,
    ) -> Iterator[Instance]:
        """Every instance, ordered by image then id, streamed (bounded memory); optionally only
        those of images in the given review states, or with ids in the inclusive range
        ``image_ids = (first, last)``. Model proposals scoring under ``min_proposal_score`` are
        left out (``math.inf``: every proposal). With a ``damaged`` list, instances whose stored
        values are damaged are left out and named there (``annotator.damage``) instead of
        raising ``DamagedRow``."""
        where, parameters = instance_filter(states, image_ids, min_proposal_score)
        if damaged is not None:
            yield from readable_instances(self._db, where, parameters, damaged)
            return
        query = f"{SELECT_INSTANCES}{where} ORDER BY instances.image_id, instances.id"
        # A cursor of its own: the caller may read other tables while iterating.
        for row in self._db.cursor().execute(query, parameters):
            yield instance_from_row(row)

    def instance_count(self, states: Iterable[ReviewState] | None = None) -> int:
        """How many instances there are, or of images in the given review states."""
        where, parameters = instance_filter(states, None, -math.inf)
        joined = " JOIN images ON images.id = instances.image_id" if where else ""  # the join costs at 1M rows
        query = f"SELECT count(*) FROM instances{joined}{where}"
        return self._db.execute(query, parameters).fetchone()[0]

    def _geometry(self, image_id: int, category: Category, **given: Any) -> dict[str, Any]:
        """The geometry columns, serialised, of an instance of ``category`` on the image."""
        geometry = instance_geometry(self.image(image_id), category, **given)
        for key in ("bbox", "keypoints", "polygons"):
            geometry[key] = None if geometry[key] is None else stored_json(geometry[key])
        return geometry

    def _insert_instance(
        self,
        image_id: int,
        category_id: int,
        geometry: dict[str, Any],
        *,
        score: float | None = None,
        source: Source = Source.HUMAN,
        model_version: str | None = None,
        iscrowd: bool = False,
        id: int | None = None,
    ) -> Instance:
        check_id(id, "instance")
        now = time.time()
        with self.transaction():
            cursor = self._insert_row(
                (
                    id,
                    image_id,
                    category_id,
                    geometry["rle_counts"],
                    geometry["bbox"],
                    geometry["area"],
                    geometry["keypoints"],
                    None if score is None else float(score),
                    str(Source(source)),
                    model_version,
                    int(iscrowd),
                    geometry["polygons"],
                    now,
                    now,
                    0,
                )
            )
            self._kept_by(category_id, source)
        return self.instance(cursor.lastrowid)

    def _kept_by(self, category_id: int, source: Source) -> None:
        """Makes a proposed category ordinary in the transaction that gives it a person's label
        (added, accepted, edited, moved to it, restored), so that every path agrees. An undo of that
        write leaves it kept: a category a person once used stays in their lists."""
        if source == Source.HUMAN:
            self.keep_category(category_id)

    def _insert_row(self, values: tuple[Any, ...]) -> sqlite3.Cursor:
        """Inserts one instance row, ``values`` in ``INSTANCE_COLUMNS`` order."""
        marks = ", ".join("?" * len(values))
        return self._db.execute(f"INSERT INTO instances ({INSTANCE_COLUMNS}) VALUES ({marks})", values)

    def add_instance(
        self,
        image_id: int,
        category_id: int,
        *,
        mask: np.ndarray | None = None,
        rle: masks.RLE | None = None,
        polygons: Sequence[Sequence[float]] | None = None,
        bbox: Sequence[float] | None = None,
        area: float | None = None,
        keypoints: Sequence[float] | np.ndarray | None = None,
        score: float | None = None,
        source: Source = Source.HUMAN,
        model_version: str | None = None,
        iscrowd: bool = False,
        id: int | None = None,
    ) -> Instance:
        """Adds one instance. With a mask, its box and area are the mask's, unless ``bbox`` (with
        ``area``) holds the mask: then those are kept (``annotator.geometry``)."""
        geometry = self._geometry(
            image_id,
            self.category(category_id),
            mask=mask,
            rle=rle,
            polygons=polygons,
            bbox=bbox,
            area=area,
            keypoints=keypoints,
        )
        return self._insert_instance(
            image_id,
            category_id,
            geometry,
            score=score,
            source=source,
            model_version=model_version,
            iscrowd=iscrowd,
            id=id,
        )

    def add_instance_if_new(self, image_id: int, category_id: int, **fields: Any) -> Instance | None:
        """:meth:`add_instance` (same ``fields``), unless the image has an instance of that category
        with the same mask already (or, both without a mask, the same box): then nothing is added
        and None is returned. So importing a file twice does not double its instances."""
        given = {key: fields.pop(key, None) for key in ("mask", "rle", "polygons", "bbox", "area", "keypoints")}
        geometry = self._geometry(image_id, self.category(category_id), **given)
        same = self._db.execute(
            "SELECT 1 FROM instances WHERE image_id = ? AND category_id = ? AND rle_counts IS ?"
            " AND (rle_counts IS NOT NULL OR bbox = ?) LIMIT 1",
            (image_id, category_id, geometry["rle_counts"], geometry["bbox"]),
        ).fetchone()
        return None if same is not None else self._insert_instance(image_id, category_id, geometry, **fields)

    def update_instance(
        self,
        instance_id: int,
        *,
        category_id: int | None = None,
        mask: np.ndarray | None = None,
        rle: masks.RLE | None = None,
        polygons: Sequence[Sequence[float]] | None = None,
        keypoints: Sequence[float] | np.ndarray | None = None,
        source: Source | None = Source.HUMAN,
        counts_as_edit: bool = True,
    ) -> Instance:
        """Changes an instance's category, mask or keypoints. An edit by a person makes the
        instance ``source=human`` (pass ``source=None`` to keep the recorded source). A new mask
        brings its own box and area; the outline, box and area kept from before go. Each call that
        changes one of them counts as one edit (``Instance.edits``), unless ``counts_as_edit`` is
        False (a change made to many instances at once, such as merging two categories); a change
        of source alone (accepting a proposal) does not."""
        old = self.instance(instance_id)
        edited = counts_as_edit and any(value is not None for value in (category_id, mask, rle, polygons, keypoints))
        category = self.category(category_id if category_id is not None else old.category_id)
        if keypoints is None and old.keypoints is not None and category.num_keypoints == len(old.keypoints) // 3:
            keypoints = old.keypoints
        if mask is not None or rle is not None or polygons is not None:
            columns = self._geometry(
                old.image_id, category, mask=mask, rle=rle, polygons=polygons, bbox=None, area=None, keypoints=keypoints
            )
        else:
            columns = self._geometry(
                old.image_id,
                category,
                mask=None,
                rle=old.rle,
                polygons=None,
                bbox=old.bbox,
                area=old.area,
                keypoints=keypoints,
            )
            columns["polygons"] = old.polygons_json
        with self.transaction():
            self._db.execute(
                "UPDATE instances SET category_id = ?, rle_counts = ?, bbox = ?, area = ?, keypoints = ?,"
                " polygons = ?, source = ?, updated_at = ?, edits = edits + ? WHERE id = ?",
                (
                    category.id,
                    columns["rle_counts"],
                    columns["bbox"],
                    columns["area"],
                    columns["keypoints"],
                    columns["polygons"],
                    str(source or old.source),
                    time.time(),
                    int(edited),
                    instance_id,
                ),
            )
            self._kept_by(category.id, source or old.source)
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
            self._insert_row(
                (
                    instance.id,
                    instance.image_id,
                    instance.category_id,
                    None if instance.rle is None else instance.rle["counts"],
                    stored_json(list(instance.bbox)),
                    instance.area,
                    None if instance.keypoints is None else stored_json(list(instance.keypoints)),
                    instance.score,
                    str(instance.source),
                    instance.model_version,
                    int(instance.iscrowd),
                    instance.polygons_json,
                    instance.created_at,
                    instance.updated_at,
                    instance.edits,
                )
            )
            self._kept_by(instance.category_id, instance.source)
        return self.instance(instance.id)

    # -- model history ----------------------------------------------------------------------------

    def record_model(self, record: ModelRecord) -> None:
        """Adds a model to the project's history (or updates the one of that version)."""
        with self.transaction():
            self._db.execute(
                f"INSERT OR REPLACE INTO models ({MODEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (record.version, record.weights, record.base, record.trained_on, record.held_out_ap, record.created_at),
            )

    def model_history(self) -> list[ModelRecord]:
        """The project's models, oldest first."""
        return [model_from_row(r) for r in self._db.execute(f"SELECT {MODEL_COLUMNS} FROM models ORDER BY created_at")]

    @property
    def model_in_use(self) -> str | None:
        """The version of the model the project proposes with (one of :meth:`model_history`), or None."""
        return self._meta("model_in_use")

    def use_model(self, version: str) -> None:
        with self.transaction():
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('model_in_use', ?)", (version,))
