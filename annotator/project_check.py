"""``main.py check PROJECT``: whether a project file is sound, and where it is not. No Qt.

Two looks, because SQLite notices only one kind of damage: ``PRAGMA integrity_check`` finds a
broken structure (pages, indexes, a damaged header field), but keeps no checksum of the values it
stores, so a flipped bit in an RLE, an outline or a name passes it. Every row is therefore also
read back as the program reads it and checked as export checks it, each mask in full
(``annotator.damage``). Opening a project does neither: a full check reads the whole file, seconds
for a large project; opening checks only what it must (``annotator.project_file``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from annotator.damage import check_instance
from annotator.project_file import DamagedRow, one_line
from annotator.store import Project


@dataclass
class CheckReport:
    """What ``check_project`` found: SQLite's structural problems, the rows whose values are
    damaged (named), and how many rows of each table were read."""

    structure: list[str] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)
    read: dict[str, int] = field(default_factory=dict)

    @property
    def sound(self) -> bool:
        return not self.structure and not self.rows

    def lines(self) -> list[str]:
        """The problems, one a line, then a summary line."""
        counts = ", ".join(f"{count} {table}" for table, count in self.read.items())
        if self.sound:
            return [f"ok: integrity_check ok; every value of {counts} reads back"]
        structure = "ok" if not self.structure else f"{len(self.structure)} problem(s)"
        return [
            *self.structure,
            *self.rows,
            f"damaged: integrity_check {structure}; {len(self.rows)} damaged row(s) of {counts} read "
            "(an export leaves out the damaged instances and names them)",
        ]


def _read_each(
    report: CheckReport, table: str, ids: list[int], read: Callable[[int], Any], check: Callable[[Any], None]
) -> None:
    """Reads (and checks) each row of ``table`` alone, so that a damaged one names itself
    (instances are read as export reads them, ``Project.iter_instances`` with ``damaged``)."""
    for row_id in ids:
        try:
            check(read(row_id))
        except DamagedRow as error:
            report.rows.append(str(error))
        except sqlite3.OperationalError as error:  # text that is not UTF-8
            report.rows.append(str(DamagedRow(table, row_id, f"its stored values cannot be read ({one_line(error)})")))
        except KeyError:  # an instance whose image is not there (foreign_key_check names it too)
            report.rows.append(str(DamagedRow(table, row_id, "its image is not there")))
    report.read[table] = len(ids)


def check_project(project: Project) -> CheckReport:
    """SQLite's integrity check of ``project``'s file, then every image, category, instance (each
    mask in full) and model read back and checked. A structure too broken to read on is reported
    as where reading stopped."""
    report = CheckReport(structure=project.integrity_problems())
    categories: set[int] = set()
    try:
        _read_each(report, "images", list(project.row_ids("images")), project.image, lambda image: None)
        category_ids = list(project.row_ids("categories"))
        _read_each(report, "categories", category_ids, project.category, lambda c: categories.add(c.id))

        damaged: list[DamagedRow] = []
        count = 0
        for instance in project.iter_instances(damaged=damaged):  # names the image of each damaged one
            count += 1
            try:
                check_instance(instance, full_mask=True)
                if instance.category_id not in categories:
                    raise DamagedRow("instances", instance.id, "its category is not there", instance.image_id)
            except DamagedRow as error:
                damaged.append(error)
        report.rows += [str(row) for row in sorted(damaged, key=lambda row: (row.image_id, row.row_id))]
        report.read["instances"] = count + len(damaged)
        try:
            report.read["models"] = len(project.model_history())
        except (DamagedRow, sqlite3.OperationalError) as error:
            report.rows.append(f"model history: {one_line(error)}")
    except sqlite3.DatabaseError as error:
        report.structure.append(f"reading stopped: {one_line(error)}")
    return report
