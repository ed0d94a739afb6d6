"""Masks as compressed RLE: what ``annotator.masks`` accepts reads the same in pycocotools, and
rasterising polygons is bounded whatever their coordinates."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from annotator import masks

ALPHABET = "".join(chr(48 + code) for code in range(64))


def _pixels(runs: list[int], height: int, width: int) -> np.ndarray:
    flat = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool)
    return flat.reshape(width, height).T  # RLE runs go down the columns


@settings(max_examples=300, deadline=None)
@given(counts=st.text(ALPHABET, min_size=1, max_size=16), height=st.integers(1, 4))
def test_any_rle_string_accepted_reads_the_same_in_pycocotools(counts: str, height: int) -> None:
    try:
        runs = masks.run_lengths(counts)
    except ValueError:
        return
    total = int(runs.sum())
    if total == 0 or total % height or total > 10**6:
        return
    rle = masks.validated({"size": [height, total // height], "counts": counts})
    theirs = mask_utils.decode({"size": [height, total // height], "counts": counts.encode()}).astype(bool)
    assert np.array_equal(theirs, _pixels(runs.tolist(), height, total // height))
    assert np.array_equal(masks.decode(rle), theirs)
    x, y, width, box_height = masks.bbox(rle)
    assert x + width <= total // height and y + box_height <= height  # the box of pycocotools' toBbox


@settings(max_examples=200, deadline=None)
@given(runs=st.lists(st.integers(0, 5), min_size=1, max_size=12), height=st.integers(1, 3))
def test_zero_length_runs_are_merged_into_the_same_pixels_and_a_true_box(runs: list[int], height: int) -> None:
    total = sum(runs) + (-sum(runs)) % height
    if total == 0:
        return
    runs = runs + [total - sum(runs)] if total != sum(runs) else runs
    width = total // height
    rle = masks.from_uncompressed({"size": [height, width], "counts": runs})
    expected = _pixels(runs, height, width)
    assert np.array_equal(masks.decode(rle), expected)
    assert masks.run_lengths(rle["counts"])[1:].all()
    if expected.any():
        rows, columns = np.nonzero(expected)
        assert masks.bbox(rle) == (columns.min(), rows.min(), np.ptp(columns) + 1, np.ptp(rows) + 1)
    else:
        assert masks.bbox(rle) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    "counts, problem",
    [("PPPPPP0", "a number too large"), ("1\u00e9", "alphabet"), ("1\x00", "alphabet"), ("P", "middle of a number")],
)
def test_rle_strings_pycocotools_would_misread_are_refused(counts: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        masks.validated({"size": [1, 1], "counts": counts})


def test_polygons_inside_the_bounds_are_left_as_they_are() -> None:
    polygons = [[-40.0, -30.0, 80.0, -30.0, 80.0, 70.0], [1.5, 2.5, 3.5, 2.5, 3.5, 9.5]]
    assert masks.bounded_polygons(polygons, 30, 40) == polygons
    assert masks.bounded_polygons([[100.0, 100.0, 200.0, 100.0, 200.0, 200.0]], 30, 40) == []  # all outside
    empty = masks.from_polygons([[100.0, 100.0, 200.0, 100.0, 200.0, 200.0]], 30, 40)
    assert masks.area(empty) == 0 and empty["size"] == [30, 40]


@pytest.mark.parametrize("corner", [4e7, 1e10, 1e300, -1.7e308])
def test_a_far_corner_is_clipped_where_its_edges_leave_the_bounds(corner: float) -> None:
    (clipped,) = masks.bounded_polygons([[0.0, 0.0, 30.0, 5.0, corner, corner]], 30, 40)
    x0, y0, x1, y1 = masks.polygon_bounds(30, 40)
    assert all(x0 <= x <= x1 for x in clipped[0::2]) and all(y0 <= y <= y1 for y in clipped[1::2])
    points = list(zip(clipped[0::2], clipped[1::2]))
    assert (0.0, 0.0) in points and (30.0, 5.0) in points  # the corners inside stay
    # the edge from (0, 0) to the corner is the diagonal, and leaves the bounds on it
    assert any(x == y for x, y in points if (x, y) != (0.0, 0.0))
