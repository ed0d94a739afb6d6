"""Reading instances from a project file that may be damaged: a flipped bit in stored text that
SQLite cannot notice (it keeps no checksums of values) must cost the damaged instance, named, and
not the whole export. No Qt.

What is checked here is cheap enough for every exported instance (about a microsecond): stored
text is text, JSON is JSON, an RLE's ``counts`` keep to the compressed-RLE alphabet, numbers are
finite. The full check of a mask (its runs cover the image exactly) costs about 50 us; export runs
it before tracing polygons from a mask (pycocotools writes outside its buffer decoding a bad RLE),
``main.py check`` on every mask.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Iterator
from typing import Any

from annotator import masks
from annotator.project_file import DamagedRow, one_line
from annotator.records import Instance
from annotator.schema import SELECT_INSTANCES, instance_from_row

_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"
_POLYGON = rf"\[(?:{_NUMBER}(?:,{_NUMBER})*)?\]"
# An outline as the store writes it (``stored_json`` of flat polygons): exported as it is stored,
# so it must be JSON of that shape.
STORED_POLYGONS = re.compile(rf"\[(?:{_POLYGON}(?:,{_POLYGON})*)?\]")
RLE_COUNTS = re.compile(r"[0-o]*")  # the compressed-RLE alphabet: characters 48..111


def _finite_numbers(values: Any) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def check_instance(instance: Instance, full_mask: bool = False) -> None:
    """Raises :class:`DamagedRow` when what is stored for ``instance`` cannot be what the store
    wrote; with ``full_mask`` its mask's runs are checked too (before anything decodes it)."""
    problem = None
    if instance.rle is not None and not (
        isinstance(instance.rle["counts"], str) and RLE_COUNTS.fullmatch(instance.rle["counts"])
    ):
        problem = "its mask (RLE) holds characters outside the compressed-RLE alphabet"
    elif instance.polygons_json is not None and not (
        isinstance(instance.polygons_json, str) and STORED_POLYGONS.fullmatch(instance.polygons_json)
    ):
        problem = "its outline is not a list of polygons"
    elif len(instance.bbox) != 4 or not _finite_numbers((*instance.bbox, instance.area)):
        problem = "its box or area is not four and one finite numbers"
    elif instance.keypoints is not None and (len(instance.keypoints) % 3 or not _finite_numbers(instance.keypoints)):
        problem = "its keypoints are not [x, y, v] triples of finite numbers"
    elif instance.score is not None and not _finite_numbers((instance.score,)):
        problem = "its score is not a finite number"
    elif full_mask and instance.rle is not None:
        try:
            masks.validated(instance.rle)
        except (ValueError, TypeError) as error:
            problem = f"its mask (RLE) is damaged: {one_line(error)}"
    if problem is not None:
        raise DamagedRow("instances", instance.id, problem, instance.image_id)


def _not_text(error: sqlite3.Error) -> bool:
    return isinstance(error, sqlite3.OperationalError) and "Could not decode to UTF-8" in str(error)


def readable_instances(
    db: sqlite3.Connection, where: str, parameters: list[Any], damaged: list[DamagedRow]
) -> Iterator[Instance]:
    """The instances ``SELECT_INSTANCES`` + ``where`` finds, ordered by image then id, leaving out
    (and adding to ``damaged``) those whose row cannot be read or checked. A row whose text is not
    UTF-8 stops SQLite's cursor for good: the query starts again after that row."""
    after: tuple[int, int] | None = None
    order = " ORDER BY instances.image_id, instances.id"

    def following() -> tuple[str, list[Any]]:  # the rows after the last one read
        if after is None:
            return where, list(parameters)
        joint = " AND " if where else " WHERE "
        return f"{where}{joint}(instances.image_id, instances.id) > (?, ?)", [*parameters, *after]

    while True:
        condition, values = following()
        try:
            for row in db.cursor().execute(SELECT_INSTANCES + condition + order, values):
                after = (row[1], row[0])
                try:
                    instance = instance_from_row(row)
                    check_instance(instance)
                except DamagedRow as error:
                    damaged.append(error)
                    continue
                yield instance
            return
        except sqlite3.OperationalError as error:
            if not _not_text(error):
                raise
            condition, values = following()
            key = "SELECT instances.image_id, instances.id FROM instances JOIN images ON images.id = instances.image_id"
            found = db.execute(key + condition + order + " LIMIT 1", values).fetchone()
            if found is None:
                raise
            damaged.append(DamagedRow("instances", found[1], "its stored text is not UTF-8", found[0]))
            after = (found[0], found[1])
