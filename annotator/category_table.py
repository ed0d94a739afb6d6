"""The categories of a project file: the part of :class:`annotator.store.Project` that adds,
changes and reads them (a category's keypoint names and skeleton are its schema). No Qt.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from annotator.geometry import check_id
from annotator.records import Category, Source
from annotator.schema import category_from_row, stored_json

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

    def _check_name(self, name: str, category_id: int) -> None:
        """A category's name: not empty, and no other category's."""
        if not name.strip():
            raise ValueError("category name is empty")
        other = self._db.execute("SELECT id FROM categories WHERE name = ? AND id != ?", (name, category_id)).fetchone()
        if other:
            raise ValueError(f"there is already a category named '{name}' (id {other[0]})")

    def add_category(
        self,
        name: str,
        supercategory: str = "",
        color: str | None = None,
        keypoints: Sequence[str] = (),
        skeleton: Sequence[Sequence[int]] = (),
        id: int | None = None,
    ) -> Category:
        check_id(id, "category")
        self._check_schema(keypoints, skeleton)
        with self.transaction():
            if id is None:
                id = self._db.execute("SELECT coalesce(max(id), 0) + 1 FROM categories").fetchone()[0]
            category = Category(
                id,
                name,
                supercategory,
                color or default_color(id),
                tuple(keypoints),
                tuple(tuple(int(i) for i in pair) for pair in skeleton),
            )
            self._check_name(name, id)
            self._db.execute(
                "INSERT INTO categories (id, name, supercategory, color, keypoints, skeleton)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    category.id,
                    category.name,
                    category.supercategory,
                    category.color,
                    stored_json(list(category.keypoints)),
                    stored_json([list(p) for p in category.skeleton]),
                ),
            )
        return category

    def update_category(self, category_id: int, **changes: Any) -> Category:
        """Renames, recolours or edits the keypoint schema of a category.

        The keypoint names can change freely while their number stays the same; changing the
        number is refused while instances of the category hold keypoints.
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
            self._db.execute(
                "UPDATE categories SET name = ?, supercategory = ?, color = ?, keypoints = ?, skeleton = ?"
                " WHERE id = ?",
                (
                    category.name,
                    category.supercategory,
                    category.color,
                    stored_json(list(category.keypoints)),
                    stored_json([list(p) for p in category.skeleton]),
                    category_id,
                ),
            )
        return category

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
        row = self._db.execute(
            "SELECT id, name, supercategory, color, keypoints, skeleton FROM categories WHERE id = ?",
            (category_id,),
        ).fetchone()
        if row is None:
            raise KeyError(f"no category with id {category_id}")
        return category_from_row(row)

    def categories(self) -> list[Category]:
        return [
            category_from_row(row)
            for row in self._db.execute(
                "SELECT id, name, supercategory, color, keypoints, skeleton FROM categories ORDER BY id"
            )
        ]

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
