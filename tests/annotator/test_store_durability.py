"""Durability under SIGKILL, the short version of ``bench/store_durability.py`` (whose full run of
100 kills is in bench/results/2026-12-04-store-durability.md): a child editing a project, importing
and writing proposal batches, or writing training checkpoints, is killed at random moments; no
acknowledged edit is lost, no import or batch is found in part, the file passes SQLite's integrity
check and ``main.py check`` every time, and the newest checkpoint resumes."""

from __future__ import annotations

from pathlib import Path

from bench.store_durability import run_kills


def test_sigkill_at_random_moments_loses_no_acknowledged_edit_and_no_checkpoint(tmp_path: Path) -> None:
    report = run_kills(tmp_path, kills=5, seed=7, checkpoint_every=5)
    assert report.kills == 5
    assert sum(report.acknowledged.values()) > 50, report.lines()  # the children got on with their work
    assert report.lost == [] and report.torn == [], report.lines()
    assert report.integrity == {"ok": 4}, report.lines()
    assert report.acknowledged["C"] >= 1 and report.checkpoints_failed == [], report.lines()
