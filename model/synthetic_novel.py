"""Shapes the demo model never saw: crosses, crescents, arrows and hearts, painted over the
demo's own synthetic scenes (``model.synthetic``). They measure and test what the model's tools
do for a category it does not know (docs/decisions/0016): the mask head segments a box without
having to recognise what is in it.

A scene is a ``model.synthetic.make_sample`` image (its known shapes on its backgrounds), then
``novel_shapes`` new shapes painted on top with the same fills, so the new shapes differ from the
known ones in outline only. Masks are exact, as there: a known shape's mask loses the pixels a new
shape painted over it, and a shape whose visible area falls below ``min_visible_area`` is dropped.
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np

from model.synthetic import CATEGORY_NAMES, _contrasting_colour, _rasterize, _shape_fill, make_sample

NOVEL_CATEGORY_NAMES: tuple[str, ...] = ("cross", "crescent", "arrow", "heart")


class NamedInstance(TypedDict):
    """One shape of a scene: its (H, W) bool visible ``mask`` and its category ``name``."""

    mask: np.ndarray
    name: str


def novel_outline(rng: np.random.Generator, name: str, diameter: float) -> np.ndarray:
    """(N, 2) polygon of a new shape, unrotated, centred near the origin, ``diameter`` across."""
    r = diameter / 2
    if name == "cross":
        arm = r * rng.uniform(0.25, 0.45)  # half the width of an arm
        return np.array(
            [(-arm, -r), (arm, -r), (arm, -arm), (r, -arm), (r, arm), (arm, arm)]
            + [(arm, r), (-arm, r), (-arm, arm), (-r, arm), (-r, -arm), (-arm, -arm)]
        )
    if name == "crescent":
        # a disc less an equal disc shifted by ``shift``: the arcs meet where the circles cross
        shift = r * rng.uniform(0.6, 1.0)
        meet = np.arccos(shift / (2 * r))
        outer = np.linspace(meet, 2 * np.pi - meet, 48)
        inner = np.linspace(np.pi + meet, np.pi - meet, 48)
        points = np.concatenate(
            [
                np.stack([r * np.cos(outer), r * np.sin(outer)], 1),
                np.stack([shift + r * np.cos(inner), r * np.sin(inner)], 1),
            ]
        )
        return points - points.mean(axis=0)
    if name == "arrow":
        shaft, head, neck = r * rng.uniform(0.15, 0.25), r * rng.uniform(0.45, 0.65), r * rng.uniform(0.0, 0.3)
        return np.array(
            [(-r, -shaft), (neck, -shaft), (neck, -head), (r, 0.0), (neck, head), (neck, shaft), (-r, shaft)]
        )
    if name == "heart":
        t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        points = np.stack([x, y], 1) * (r / 17)
        return points - points.mean(axis=0)
    raise ValueError(f"unknown novel shape {name!r}")


def make_novel_sample(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    known_shapes: tuple[int, int] = (1, 3),
    novel_shapes: tuple[int, int] = (1, 2),
    shape_size: tuple[float, float] = (0.2, 0.45),
    min_visible_area: int = 30,
) -> tuple[np.ndarray, list[NamedInstance]]:
    """A scene of known shapes with new shapes painted over them.

    Args:
        known_shapes, novel_shapes: inclusive ranges of the number of shapes of each kind.
        shape_size: a new shape's diameter as a fraction of ``min(height, width)``; new shapes keep
            their centre 15% of a side inside the image, so most of each stays in view.
    Returns:
        ``image``: (H, W, 3) uint8 RGB. ``instances``: the known shapes (bottom first), then the
        new ones, each with its visible mask and category name.
    """
    image, known = make_sample(
        rng, height, width, min_shapes=known_shapes[0], max_shapes=known_shapes[1], min_visible_area=min_visible_area
    )
    canvas = image.astype(np.float32)
    instances: list[NamedInstance] = [
        {"mask": shape["mask"].copy(), "name": CATEGORY_NAMES[shape["category_id"] - 1]} for shape in known
    ]
    for _ in range(int(rng.integers(novel_shapes[0], novel_shapes[1] + 1))):
        name = NOVEL_CATEGORY_NAMES[int(rng.integers(len(NOVEL_CATEGORY_NAMES)))]
        outline = novel_outline(rng, name, rng.uniform(*shape_size) * min(height, width))
        angle = rng.uniform(0, 2 * np.pi)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        centre = rng.uniform((0.15 * width, 0.15 * height), (0.85 * width, 0.85 * height))
        window, x0, y0 = _rasterize(outline @ rotation.T + centre)
        painted = np.zeros((height, width), dtype=bool)
        left, top = max(x0, 0), max(y0, 0)
        right, bottom = min(x0 + window.shape[1], width), min(y0 + window.shape[0], height)
        painted[top:bottom, left:right] = window[top - y0 : bottom - y0, left - x0 : right - x0]
        if not painted.any():
            continue
        colour = _contrasting_colour(rng, canvas[painted].mean(axis=0))
        canvas[painted] = _shape_fill(rng, colour, height, width)[painted]
        for below in instances:
            below["mask"] &= ~painted
        instances.append({"mask": painted, "name": name})
    visible = [shape for shape in instances if int(shape["mask"].sum()) >= min_visible_area]
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), visible
