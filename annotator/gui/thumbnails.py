"""Thumbnails made on the thread pool on first request and kept in memory (LRU)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from PIL import ImageOps
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from annotator.gui.background import run_in_background

THUMBNAIL_SIDE = 72  # pixels
CACHE_SIZE = 2000


def make_thumbnail(path: Path, side: int = THUMBNAIL_SIDE) -> QImage:
    """A ``side``-bounded thumbnail, EXIF orientation applied; JPEGs decode at a reduced size."""
    from model.images import open_image  # the allow-listed formats only, sizes checked by the header

    with open_image(path) as image:
        image.draft("RGB", (side * 2, side * 2))  # JPEG: decode at 1/2..1/8 scale, much faster
        image = ImageOps.exif_transpose(image)
        image.thumbnail((side, side))
        rgb = image.convert("RGB")
        data = rgb.tobytes()
        return QImage(data, rgb.width, rgb.height, 3 * rgb.width, QImage.Format.Format_RGB888).copy()


class ThumbnailCache(QObject):
    ready = Signal(int)  # image id whose thumbnail arrived

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._images: OrderedDict[int, QImage] = OrderedDict()
        self._pending: set[int] = set()

    def get(self, image_id: int, path: Path) -> QImage | None:
        """The thumbnail if made; otherwise starts making it and returns None."""
        image = self._images.get(image_id)
        if image is not None:
            self._images.move_to_end(image_id)
            return image
        if image_id not in self._pending:
            self._pending.add(image_id)
            run_in_background(
                lambda: make_thumbnail(path),
                lambda result: self._store(image_id, result),
                lambda message: self._store(image_id, QImage()),
            )
        return None

    def _store(self, image_id: int, image: QImage) -> None:
        self._pending.discard(image_id)
        self._images[image_id] = image
        while len(self._images) > CACHE_SIZE:
            self._images.popitem(last=False)
        self.ready.emit(image_id)

    def clear(self) -> None:
        self._images.clear()
