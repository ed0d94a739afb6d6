"""What the project store holds, as the rest of the program sees it: images with their review
state, categories, and instances (a mask, box and keypoints of one category on one image, drawn
by a person or proposed by the model), and what an image's file name may be. No Qt.
``annotator.store`` reads and writes them.
"""

from __future__ import annotations

import enum
import json
import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from annotator import masks


class ReviewState(enum.IntEnum):
    UNLABELED = 0
    PROPOSED = 1
    IN_REVIEW = 2
    DONE = 3

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


class Source(enum.StrEnum):
    MODEL = "model"
    HUMAN = "human"


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    supercategory: str = ""
    color: str = "#1f77b4"
    keypoints: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()  # 1-based keypoint indices, as in COCO
    # brought in by the model's proposals and not yet used by a person: a category of the project's
    # lists only once a label of it is kept (docs/decisions/0004, "Proposed categories")
    proposed: bool = False

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)


@dataclass(frozen=True)
class ImageRecord:
    id: int
    file_name: str  # POSIX path relative to the image root
    width: int
    height: int
    sha256: str
    state: ReviewState
    active_seconds: float = 0.0  # time a person worked on the image in the app (annotator.effort)
    done_at: float | None = None  # when it was last marked done (Unix time); None while not done


@dataclass(frozen=True)
class Instance:
    id: int
    image_id: int
    category_id: int
    rle: masks.RLE | None  # None for a box-only annotation
    bbox: tuple[float, float, float, float]
    area: float
    keypoints: tuple[float, ...] | None  # [x, y, v] * K, or None for a category without keypoints
    score: float | None
    source: Source
    model_version: str | None
    iscrowd: bool
    # The outline the mask was drawn as (JSON list of flat polygons), kept while the mask is
    # unchanged; held as stored text so that an export can write it without parsing it.
    polygons_json: str | None
    created_at: float
    updated_at: float
    # edits a person made to it after it was created (strokes, category changes, keypoint drags,
    # merges); 0 for a proposal accepted as it was
    edits: int = 0

    @property
    def polygons(self) -> tuple[tuple[float, ...], ...] | None:
        return None if self.polygons_json is None else tuple(tuple(p) for p in json.loads(self.polygons_json))

    @property
    def mask(self) -> np.ndarray | None:
        """The ``H x W`` bool mask, or None for a box-only annotation."""
        return None if self.rle is None else masks.decode(self.rle)

    @property
    def keypoints_array(self) -> np.ndarray | None:
        """Keypoints as a ``K x 3`` float array of ``(x, y, v)``."""
        return None if self.keypoints is None else np.asarray(self.keypoints, dtype=np.float64).reshape(-1, 3)

    @property
    def num_keypoints(self) -> int:
        """Keypoints labelled (v > 0), COCO's ``num_keypoints``."""
        return 0 if self.keypoints is None else sum(1 for v in self.keypoints[2::3] if v > 0)


@dataclass(frozen=True)
class ModelRecord:
    """A model in the project's history: one it started from or one a fine-tune produced."""

    version: str  # the model version its proposals carry (``Predictor.model_version``)
    weights: str  # its weights: a file (relative to the project's folder when beside it) or a registry name
    base: str | None  # the version it was fine-tuned from; None for a starting model
    trained_on: int  # images it learned from (the done images a round trained on)
    held_out_ap: float | None  # mask AP on the held-out done images when it was made (0..1)
    created_at: float  # Unix time


def check_file_name(file_name: str) -> str:
    """The normalised POSIX form of an image path relative to the image root.

    Raises ValueError for an empty, absolute or Windows-drive path, one that climbs out of the
    root with ``..`` (a label file must not reach files outside the folder the user chose), and one
    holding a control character or line break (no file on disk is named so; and messages naming
    the file stay one line).
    """
    if not isinstance(file_name, str) or not file_name.strip():
        raise ValueError("file name is empty")
    if any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in file_name):
        raise ValueError(f"file name {file_name!r} holds a control character or line break")
    posix = file_name.replace("\\", "/")
    path = PurePosixPath(posix)
    if path.is_absolute() or (len(posix) > 1 and posix[1] == ":"):
        raise ValueError(f"file name {file_name!r} is absolute; it must be relative to the image root")
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            if not parts:
                raise ValueError(f"file name {file_name!r} climbs out of the image root with '..'")
            parts.pop()
        elif part != ".":
            parts.append(part)
    if not parts:
        raise ValueError(f"file name {file_name!r} names no file")
    return "/".join(parts)
