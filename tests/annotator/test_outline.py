"""Outline editing's geometry, without a window (annotator.outline)."""

from __future__ import annotations

import numpy as np

from annotator import masks, outline
from annotator.records import Instance, Source

TRIANGLE = [[0.0, 0.0, 10.0, 0.0, 0.0, 10.0]]


def test_vertices_move_insert_and_delete_and_a_triangle_cannot_lose_one() -> None:
    assert outline.moved(TRIANGLE, 0, 1, 12, 1) == [[0.0, 0.0, 12.0, 1.0, 0.0, 10.0]]
    assert outline.inserted(TRIANGLE, 0, 0, 5, 0) == [[0.0, 0.0, 5.0, 0.0, 10.0, 0.0, 0.0, 10.0]]
    assert outline.deleted(TRIANGLE, 0, 2) is None
    assert outline.deleted([*TRIANGLE, [20.0, 20.0, 30.0, 20.0, 20.0, 30.0]], 0, 0) == [
        [20.0, 20.0, 30.0, 20.0, 20.0, 30.0]
    ]
    assert TRIANGLE == [[0.0, 0.0, 10.0, 0.0, 0.0, 10.0]]  # copies, never in place


def test_the_nearest_vertex_and_edge_are_found_with_the_point_on_the_edge() -> None:
    assert outline.nearest_vertex(TRIANGLE, 9, 1)[:2] == (0, 1)
    part, after, distance, foot = outline.nearest_edge(TRIANGLE, 5, 5)  # on the slanted edge
    assert (part, after, foot) == (0, 1, (5.0, 5.0)) and distance == 0


def test_a_mask_is_traced_into_few_vertices_that_give_back_its_pixels() -> None:
    mask = np.zeros((60, 80), dtype=bool)
    for row in range(10, 50):  # a right triangle: a staircase edge of 40 steps
        mask[row, 10 : 10 + (row - 10)] = True
    rle = masks.encode(mask)
    instance = Instance(
        1, 1, 1, rle, masks.bbox(rle), masks.area(rle), None, None, Source.HUMAN, None, False, None, 0, 0
    )
    (traced,) = outline.editable_outline(instance)
    assert len(traced) // 2 <= 6
    back = masks.decode(masks.from_polygons([traced], 60, 80))
    assert (back & mask).sum() / (back | mask).sum() > 0.9
