"""Editing an instance's outline as labelme does, without Qt: the polygons to edit (the outline it
was drawn as, else one traced from its mask), and moving, inserting and deleting vertices. The
outline tool (annotator.gui.tools.outline) calls these; the mask then follows the polygons.

Polygons are lists of flat ``[x1, y1, x2, y2, ...]`` lists in image pixels, as COCO's.
"""

from __future__ import annotations

import json
import math

import cv2
import numpy as np

from annotator import masks
from annotator.records import Instance

# A traced outline keeps a vertex wherever the mask's edge turns by more than this (pixels, the
# Douglas-Peucker tolerance): the tracing export uses puts one at every pixel step of a slanted edge,
# hundreds for a hand-sized shape, too many to drag; at 1 px the polygon rasterises back to the
# mask give or take its edge pixels.
TRACE_TOLERANCE = 1.0

Polygons = list[list[float]]


def editable_outline(instance: Instance) -> Polygons:
    """The polygons to edit: the outline the instance was drawn as, else its mask traced as an export
    traces it (``masks.polygons_json``) and simplified (``TRACE_TOLERANCE``); [] for a box-only one."""
    if instance.polygons is not None:
        return [list(p) for p in instance.polygons]
    if instance.rle is None:
        return []
    traced = json.loads(masks.polygons_json(instance.rle))
    simplified = []
    for flat in traced:
        points = np.asarray(flat, dtype=np.float32).reshape(-1, 1, 2)
        kept = cv2.approxPolyDP(points, TRACE_TOLERANCE, closed=True).reshape(-1)
        if kept.size >= 6:
            simplified.append([float(v) for v in kept])
    return simplified


def vertex(polygons: Polygons, part: int, index: int) -> tuple[float, float]:
    return polygons[part][2 * index], polygons[part][2 * index + 1]


def moved(polygons: Polygons, part: int, index: int, x: float, y: float) -> Polygons:
    """A copy with vertex ``index`` of polygon ``part`` at ``(x, y)``."""
    result = [list(p) for p in polygons]
    result[part][2 * index : 2 * index + 2] = [float(x), float(y)]
    return result


def inserted(polygons: Polygons, part: int, after: int, x: float, y: float) -> Polygons:
    """A copy with a new vertex at ``(x, y)`` between vertex ``after`` and the next."""
    result = [list(p) for p in polygons]
    result[part][2 * after + 2 : 2 * after + 2] = [float(x), float(y)]
    return result


def deleted(polygons: Polygons, part: int, index: int) -> Polygons | None:
    """A copy without vertex ``index`` of polygon ``part``; a polygon left with fewer than 3 vertices
    goes. None when nothing would be left."""
    result = [list(p) for p in polygons]
    del result[part][2 * index : 2 * index + 2]
    result = [p for p in result if len(p) >= 6]
    return result or None


def nearest_vertex(polygons: Polygons, x: float, y: float) -> tuple[int, int, float]:
    """``(part, index, distance)`` of the vertex nearest ``(x, y)`` (image pixels); distance inf for none."""
    best = (-1, -1, math.inf)
    for part, flat in enumerate(polygons):
        points = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
        distances = np.hypot(points[:, 0] - x, points[:, 1] - y)
        index = int(np.argmin(distances))
        if distances[index] < best[2]:
            best = (part, index, float(distances[index]))
    return best


def nearest_edge(polygons: Polygons, x: float, y: float) -> tuple[int, int, float, tuple[float, float]]:
    """``(part, after, distance, foot)``: the edge from vertex ``after`` to the next nearest ``(x, y)``,
    the distance to it and the nearest point on it; part -1 and distance inf for none."""
    best: tuple[int, int, float, tuple[float, float]] = (-1, -1, math.inf, (x, y))
    for part, flat in enumerate(polygons):
        points = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
        starts, ends = points, np.roll(points, -1, axis=0)
        along = ends - starts
        length2 = np.maximum((along**2).sum(axis=1), 1e-12)
        t = np.clip(((np.array([x, y]) - starts) * along).sum(axis=1) / length2, 0.0, 1.0)
        feet = starts + t[:, None] * along
        distances = np.hypot(feet[:, 0] - x, feet[:, 1] - y)
        index = int(np.argmin(distances))
        if distances[index] < best[2]:
            best = (part, index, float(distances[index]), (float(feet[index, 0]), float(feet[index, 1])))
    return best
