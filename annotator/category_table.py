"""The categories of a project file: the part of :class:`annotator.store.Project` that adds,
changes and reads them (a category's keypoint names and skeleton are its schema). No Qt.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from annotator.geometry import check_id
from annotator.project_file import ProjectBusy
from annotator.records import Category, Source
from annotator.schema import CATEGORY_COLUMNS, category_from_row, stored_json

# Distinct, readable colours for new categories (Tableau 10), cycled by category id.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def default_color(category_id: int) -> str:
    return PALETTE[(category_id - 1) % len(PALETTE)]


class CategoryTable:
    """Category methods over the project's connection; :class:`annotator.store.Project` is one."""

    _db: sqlite3.Connection

    def transaction(self) -> Any:  # pragma: no cover - Project's
        raise NotImplementedError

    @staticmethod
    def _check_schema(keypoints: Sequence[str], skeleton: Sequence[Sequence[int]]) -> None:
        if len(set(keypoints)) != len(keypoints):
            raise ValueError("keypoint names must be unique")
        for pair in skeleton:
            if len(pair) != 2 or not all(isinstance(i, int) and 1 <= i <= len(keypoints) for i in pair):
                raise ValueError(f"skeleton edge {list(pair)} must be two keypoint numbers in 1..{len(keypoints)}")

    def _check_name(self, name: str, category_id: int, proposed: bool = False) -> None:
        """A category's name: not empty, and no other category's. A proposed category's name is
        free to a person's category, which takes its place (:meth:`_take_place_of`)."""
        if not name.strip():
            raise ValueError("category name is empty")
        kept_only = "" if proposed else " AND NOT proposed"
        other = self._db.execute(
            f"SELECT id FROM categories WHERE name = ? AND id != ?{kept_only}", (name, category_id)
        ).fetchone()
        if other:
            raise ValueError(f"there is already a category named '{name}' (id {other[0]})")

    def _proposed_named(self, name: str, other_than: int | None = None) -> Category | None:
        row = self._db.execute(
            f"SELECT {CATEGORY_COLUMNS} FROM categories WHERE name = ? AND proposed AND id IS NOT ?", (name, other_than)
        ).fetchone()
        return None if row is None else category_from_row(row)

    def _fit_keypoints(self, category: Category) -> None:
        """Drops the keypoints of ``category``'s instances that do not have its number of them: the
        proposals of a proposed category whose place a person's category took, as a new proposal's
        keypoints are dropped where they do not fit (``annotator.proposals.store_proposals``)."""
        rows = self._db.execute(
            "SELECT id, keypoints FROM instances WHERE category_id = ? AND keypoints IS NOT NULL", (category.id,)
        ).fetchall()
        unfit = [(row_id,) for row_id, keypoints in rows if len(json.loads(keypoints)) != 3 * category.num_keypoints]
        self._db.executemany("UPDATE instances SET keypoints = NULL WHERE id = ?", unfit)

    def _take_place_of(self, waiting: Category, category: Category) -> None:
        """A person's ``category`` (not yet stored) takes the place of the proposed category of its
        name, ``waiting``: the row becomes ``category``, kept, and its proposals are ``category``'s."""
        if category.id != waiting.id:  # an id asked for (undo): the row and its proposals move there
            # the proposals refer to the moved row only once both have moved; the check waits for the commit
            self._db.execute("PRAGMA defer_foreign_keys = ON")
            self._db.execute("UPDATE instances SET category_id = ? WHERE category_id = ?", (category.id, waiting.id))
        self._db.execute(
            "UPDATE categories SET id = ?, name = ?, supercategory = ?, color = ?, keypoints = ?, skeleton = ?,"
            " proposed = 0 WHERE id = ?",
            (*self._stored_values(category), waiting.id),
        )
        self._fit_keypoints(category)

    @staticmethod
    def _stored_values(category: Category) -> tuple[Any, ...]:
        """id, name, supercategory, color, keypoints and skeleton as the categories table holds them."""
        return (
            category.id,
            category.name,
            category.supercategory,
            category.color,
            stored_json(list(category.keypoints)),
            stored_json([list(p) for p in category.skeleton]),
        )

    def add_category(
        self,
        name: str,
        supercategory: str = "",
        color: str | None = None,
        keypoints: Sequence[str] = (),
        skeleton: Sequence[Sequence[int]] = (),
        id: int | None = None,
        *,
        proposed: bool = False,
    ) -> Category:
        """Adds a category: a person's (the category panel, an import), or with ``proposed`` one the
        model's proposals bring in (``annotator.proposals.ProposalCategories``), left out of the
        project's lists (:meth:`kept_categories`) until a label of it is kept.

        A person's category named as a proposed one takes that one's place rather than being
        refused: the proposed one becomes it, as the person defines it (under ``id`` when given,
        else under its own id), with the proposals it holds."""
        check_id(id, "category")
        self._check_schema(keypoints, skeleton)
        with self.transaction():
            waiting = None if proposed else self._proposed_named(name)
            if id is None:
                id = waiting.id if waiting is not None else self._next_category_id()
            category = Category(
                id,
                name,
                supercategory,
                color or (waiting.color if waiting is not None else default_color(id)),
                tuple(keypoints),
                tuple(tuple(int(i) for i in pair) for pair in skeleton),
                proposed,
            )
            self._check_name(name, id, proposed)
            if waiting is not None:
                self._take_place_of(waiting, category)
            else:
                self._db.execute(
                    "INSERT INTO categories (id, name, supercategory, color, keypoints, skeleton, proposed)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (*self._stored_values(category), int(proposed)),
                )
        return category

    def _next_category_id(self) -> int:
        return self._db.execute("SELECT coalesce(max(id), 0) + 1 FROM categories").fetchone()[0]

    def update_category(self, category_id: int, **changes: Any) -> Category:
        """Renames, recolours or edits the keypoint schema of a category.

        The keypoint names can change freely while their number stays the same; changing the
        number is refused while instances of the category hold keypoints. Renamed as a proposed
        category, it takes that one's proposals, and the proposed one goes (:meth:`add_category`).
        """
        with self.transaction():
            category = replace(self.category(category_id), **changes)
            category = replace(
                category, keypoints=tuple(category.keypoints), skeleton=tuple(tuple(p) for p in category.skeleton)
            )
            self._check_name(category.name, category_id)
            self._check_schema(category.keypoints, category.skeleton)
            if len(category.keypoints) != self.category(category_id).num_keypoints:
                used = self._db.execute(
                    "SELECT count(*) FROM instances WHERE category_id = ? AND keypoints IS NOT NULL",
                    (category_id,),
                ).fetchone()[0]
                if used:
                    raise ValueError(
                        f"{used} instances of '{category.name}' hold keypoints; their number cannot change"
                    )
            waiting = self._proposed_named(category.name, other_than=category_id)
            if waiting is not None:
                moving = (category_id, waiting.id)
                self._db.execute("UPDATE instances SET category_id = ? WHERE category_id = ?", moving)
                self._db.execute("DELETE FROM categories WHERE id = ?", (waiting.id,))
                self._fit_keypoints(category)
            self._db.execute(
                "UPDATE categories SET name = ?, supercategory = ?, color = ?, keypoints = ?, skeleton = ?"
                " WHERE id = ?",
                (*self._stored_values(category)[1:], category_id),
            )
        return category

    def keep_category(self, category_id: int) -> None:
        """Makes a proposed category an ordinary one; nothing changes for one that is. The store does
        it as a label of the category becomes a person's (``Project._kept_by``), and an import for
        each category its file names."""
        with self.transaction():
            self._db.execute("UPDATE categories SET proposed = 0 WHERE id = ? AND proposed", (category_id,))

    def drop_unused_proposed_categories(self) -> list[Category]:
        """Deletes the proposed categories that no instance is of any more (every proposal of theirs
        was rejected or replaced) and returns them. ``Project.open`` does it: an undo step that
        could bring their proposals back lives only as long as the program that made it. While
        another program keeps the file locked nothing goes: a later opening drops them."""
        unused = "proposed AND NOT EXISTS (SELECT 1 FROM instances WHERE category_id = categories.id)"
        if self._db.execute(f"SELECT 1 FROM categories WHERE {unused} LIMIT 1").fetchone() is None:
            return []  # nothing to write: no write lock is taken
        try:
            with self.transaction():
                query = f"SELECT {CATEGORY_COLUMNS} FROM categories WHERE {unused} ORDER BY id"
                found = [category_from_row(row) for row in self._db.execute(query)]
                self._db.executemany("DELETE FROM categories WHERE id = ?", [(category.id,) for category in found])
        except ProjectBusy:
            return []
        return found

    def delete_category(self, category_id: int) -> Category:
        """Deletes a category that no instance uses and returns it as it was (undo adds it back
        with :meth:`add_category` under its id). A category in use is refused: its instances
        move to another category first (``UndoStack.delete_category``)."""
        with self.transaction():
            category = self.category(category_id)
            used = self._db.execute("SELECT count(*) FROM instances WHERE category_id = ?", (category_id,)).fetchone()[
                0
            ]
            if used:
                raise ValueError(f"{used} instances are '{category.name}': move them to another category first")
            self._db.execute("DELETE FROM categories WHERE id = ?", (category_id,))
        return category

    def category(self, category_id: int) -> Category:
        row = self._db.execute(f"SELECT {CATEGORY_COLUMNS} FROM categories WHERE id = ?", (category_id,)).fetchone()
        if row is None:
            raise KeyError(f"no category with id {category_id}")
        return category_from_row(row)

    def categories(self) -> list[Category]:
        """Every category, the proposed ones too: what the canvas and the instance list draw
        instances with."""
        query = f"SELECT {CATEGORY_COLUMNS} FROM categories ORDER BY id"
        return [category_from_row(row) for row in self._db.execute(query)]

    def kept_categories(self) -> list[Category]:
        """The project's categories as a person's lists show them and exports write them: all but
        the proposed ones (``Category.proposed``), which come in with the model's proposals and
        join these once a label of them is kept."""
        query = f"SELECT {CATEGORY_COLUMNS} FROM categories WHERE NOT proposed ORDER BY id"
        return [category_from_row(row) for row in self._db.execute(query)]

    def exported_categories(self, with_proposals: bool) -> list[Category]:
        """The categories an export lists, in id order: the project's (:meth:`kept_categories`), and
        those the model only proposed too when the export writes proposals (their only labels)."""
        return self.categories() if with_proposals else self.kept_categories()

    def category_by_name(self, name: str) -> Category | None:
        return next((c for c in self.categories() if c.name == name), None)

    def instance_counts_by_category(self, source: Source | None = None) -> dict[int, int]:
        """Instances per category id (every category, 0 where it has none); only those of one
        ``source`` when given (``Source.HUMAN``: the labels people drew, accepted or imported)."""
        counts = {category.id: 0 for category in self.categories()}
        where, parameters = ("", ()) if source is None else (" WHERE source = ?", (str(source),))
        for category_id, count in self._db.execute(
            f"SELECT category_id, count(*) FROM instances{where} GROUP BY category_id", parameters
        ):
            counts[category_id] = count
        return counts
