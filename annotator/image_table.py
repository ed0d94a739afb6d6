"""Image methods of the project store: adding images, reading them, their review states and the
seconds people spent on them. :class:`annotator.store.Project` is an ``ImageTable``; the image root
(where the files are) stays with the project file's own methods there."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from annotator.geometry import check_id
from annotator.records import ImageRecord, ReviewState, check_file_name
from annotator.schema import IMAGE_COLUMNS, image_from_row


class ImageTable:
    """Image methods over the project's connection; :class:`annotator.store.Project` is one."""

    _db: sqlite3.Connection
    # the review state this connection last set, by image: an undo step tells this program's own
    # moves from another program's (annotator.commands)
    states_written: dict[int, ReviewState]

    def transaction(self) -> Any:  # pragma: no cover - Project's
        raise NotImplementedError

    def id_in_use(self, table: Literal["images", "categories", "instances"], row_id: int) -> bool:  # pragma: no cover
        raise NotImplementedError

    def add_image(
        self,
        file_name: str,
        width: int,
        height: int,
        sha256: str,
        state: ReviewState = ReviewState.UNLABELED,
        id: int | None = None,
    ) -> ImageRecord:
        file_name = check_file_name(file_name)
        check_id(id, "image")
        with self.transaction():
            cursor = self._db.execute(
                "INSERT INTO images (id, file_name, width, height, sha256, state, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (id, file_name, int(width), int(height), sha256, int(state), time.time()),
            )
        return ImageRecord(cursor.lastrowid, file_name, int(width), int(height), sha256, ReviewState(state))

    def change_image_id(self, image_id: int, new_id: int) -> ImageRecord:
        """Gives an image that no instance refers to yet a free id: an import keeps a file's image
        ids so for images that ``new`` added (and numbered in file-name order)."""
        check_id(new_id, "image")
        with self.transaction():
            if self.id_in_use("images", new_id):
                raise ValueError(f"image id {new_id} is in use")
            if self._db.execute("SELECT 1 FROM instances WHERE image_id = ? LIMIT 1", (image_id,)).fetchone():
                raise ValueError(f"image {image_id} has instances; its id stays")
            self._db.execute("UPDATE images SET id = ? WHERE id = ?", (new_id, image_id))
        return self.image(new_id)

    def image(self, image_id: int) -> ImageRecord:
        row = self._db.execute(f"SELECT {IMAGE_COLUMNS} FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise KeyError(f"no image with id {image_id}")
        return image_from_row(row)

    def image_by_file_name(self, file_name: str) -> ImageRecord | None:
        row = self._db.execute(
            f"SELECT {IMAGE_COLUMNS} FROM images WHERE file_name = ?",
            (check_file_name(file_name),),
        ).fetchone()
        return None if row is None else image_from_row(row)

    def images(self, state: ReviewState | None = None) -> list[ImageRecord]:
        """Images in id order, optionally only those in one review state."""
        return list(self.iter_images(state))

    def iter_images(
        self, state: ReviewState | None = None, states: Iterable[ReviewState] | None = None
    ) -> Iterator[ImageRecord]:
        query = f"SELECT {IMAGE_COLUMNS} FROM images"
        wanted = [int(s) for s in (states or ([] if state is None else [state]))]
        if wanted:
            query += f" WHERE state IN ({','.join('?' * len(wanted))})"
        for row in self._db.execute(query + " ORDER BY id", wanted):
            yield image_from_row(row)

    def image_states(self, state: ReviewState | None = None) -> list[tuple[int, ReviewState]]:
        """Each image's id and review state, in the order and selection of :meth:`images`, without
        reading the rest of its row: a window checks its image list with it after another program
        changed the project (a fifth of the time of :meth:`images`)."""
        where, parameters = ("", ()) if state is None else (" WHERE state = ?", (int(state),))
        rows = self._db.execute(f"SELECT id, state FROM images{where} ORDER BY id", parameters)
        states = tuple(ReviewState)  # indexed by value: ReviewState(value) would cost most of the time
        return [(image_id, states[value]) for image_id, value in rows]

    def image_count(self) -> int:
        return self._db.execute("SELECT count(*) FROM images").fetchone()[0]

    def set_review_state(self, image_id: int, state: ReviewState) -> None:
        """Sets an image's review state; marking it done records when (``done_at``, the order the
        effort statistics follow; marking a done image done again keeps it), any other state clears
        that."""
        now = time.time()
        with self.transaction():
            # an image marked done again keeps the time it first became done
            cursor = self._db.execute(
                "UPDATE images SET state = ?, updated_at = ?,"
                " done_at = CASE WHEN ? THEN coalesce(done_at, ?) END WHERE id = ?",
                (int(state), now, state == ReviewState.DONE, now, image_id),
            )
            if cursor.rowcount != 1:
                raise KeyError(f"no image with id {image_id}")
            self.states_written[image_id] = state

    def add_active_seconds(self, image_id: int, seconds: float) -> None:
        """Adds time a person spent working on an image (``annotator.effort.ActiveTime``)."""
        if seconds > 0:
            with self.transaction():
                self._db.execute(
                    "UPDATE images SET active_seconds = active_seconds + ? WHERE id = ?", (float(seconds), image_id)
                )

    def review_state_counts(self) -> dict[ReviewState, int]:
        counts = {state: 0 for state in ReviewState}
        for state, count in self._db.execute("SELECT state, count(*) FROM images GROUP BY state"):
            counts[ReviewState(state)] = count
        return counts
