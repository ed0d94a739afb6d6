"""Reading images from disk the same way everywhere: the store, the model and the GUI.

Qt-free and torch-free. Images come back as ``H x W x 3`` ``uint8`` RGB arrays with the EXIF
orientation applied, so the pixel grid matches what a photo viewer shows and what labelme and
CVAT annotate. Grayscale and palette images become RGB, an alpha channel is dropped, and 16-bit
images are stretched to 8 bits over their own value range (docs/decisions/0001-image-reading.md).

Every image is opened through ``open_image``: regular files only (never a FIFO or a device), in
the formats of ``IMAGE_FORMATS`` only (never EPS or PostScript, which Pillow hands to Ghostscript,
whatever the file's suffix), and refused by its header's size before its pixels are decoded.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Pillow's names of the formats above: the only decoders an image file reaches. A JPEG holding
# several pictures (MPO, written by some cameras) is read as its first, through the JPEG decoder.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")
DEFAULT_MAX_PIXELS = 200_000_000
# Longer side over shorter side. The model scales an image so that its longer side fits its input
# (1333 pixels, 533 for the small architecture); beyond this ratio the shorter side would shrink
# to a few pixels, and past the input size to none, where the model stops with an error.
MAX_ASPECT_RATIO = 100

# We check the pixel count ourselves, before decoding, against a limit the user can change.
Image.MAX_IMAGE_PIXELS = None


class ImageReadError(InputError):
    """An image file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class ImageInfo:
    """What the project stores about an image file: size after EXIF orientation, content hash."""

    width: int
    height: int
    sha256: str


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


_FILE_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
    stat.S_IFSOCK: "a socket",
}


@contextmanager
def _regular_file(path: Path) -> Iterator[BinaryIO]:
    """``path`` open for reading in binary, if it is a regular file. Opening does not wait for a
    writer on a FIFO (``O_NONBLOCK``), and nothing is read from a FIFO, a device such as
    ``/dev/zero`` (a symlink to one included) or a folder."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ImageReadError(path, "image file not found") from None
    except OSError as error:
        raise ImageReadError(path, f"cannot read the file ({error.strerror})") from None
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _FILE_KINDS.get(stat.S_IFMT(mode), "another kind of file")
            raise ImageReadError(path, f"not a regular file but {kind}; images are read from regular files only")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        yield file


def _identified(file: BinaryIO, path: Path, max_pixels: int) -> Image.Image:
    """The image in ``file``, its header read and checked, its pixels not decoded yet."""
    try:
        image = Image.open(file, formats=IMAGE_FORMATS)
    except UnidentifiedImageError:  # its text is "cannot identify image file <BufferedReader ...>"
        raise ImageReadError(path, "not a readable image (not a JPEG, PNG, BMP, TIFF or WebP file)") from None
    except Exception as error:  # PIL raises several types for unreadable headers
        if "truncat" in str(error).lower():
            raise ImageReadError(path, f"image data is truncated or corrupt ({error})") from None
        raise ImageReadError(path, f"not a readable image ({error})") from None
    _check_size(path, *image.size, max_pixels)
    return image


def _check_size(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageReadError(
            path,
            f"image has {width * height / 1e6:.1f} megapixels, over the limit of "
            f"{max_pixels / 1e6:.0f} (raise it with --max-pixels)",
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageReadError(
            path,
            f"image is {width}x{height} pixels, its sides in a ratio over "
            f"{MAX_ASPECT_RATIO}:1, too narrow for the model",
        )


@contextmanager
def open_image(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Image.Image]:
    """The image at ``path`` as Pillow opens it, its header checked and its pixels not decoded yet
    (for a thumbnail, ``draft`` can still pick a reduced JPEG scale). The EXIF orientation is not
    applied. The one way this project opens an image file.

    Raises:
        ImageReadError: the file is missing, not a regular file, not in ``IMAGE_FORMATS``, over
            ``max_pixels`` or over ``MAX_ASPECT_RATIO``.
    """
    path = Path(path)
    with _regular_file(path) as file, _identified(file, path, max_pixels) as image:
        yield image


def _decoded(image: Image.Image, path: Path) -> np.ndarray:
    """Decodes everything (a truncated file fails here, not later in the GUI), EXIF applied."""
    try:
        image.load()
        oriented = ImageOps.exif_transpose(image)
    except Exception as error:
        raise ImageReadError(path, f"image data is truncated or corrupt ({error})") from None
    return _to_rgb8(oriented)


def _to_rgb8(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)  # a writable copy: torch.from_numpy wants one


def read_image_file(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, ImageInfo]:
    """Decodes ``path`` fully; returns the ``H x W x 3`` uint8 RGB pixels and the file's info."""
    path = Path(path)
    with _regular_file(path) as file:
        with _identified(file, path, max_pixels) as image:
            pixels = _decoded(image, path)
        try:
            file.seek(0)
            sha256 = hashlib.file_digest(file, "sha256").hexdigest()
        except OSError as error:
            raise ImageReadError(path, f"cannot read the file ({error.strerror})") from None
    height, width = pixels.shape[:2]
    return pixels, ImageInfo(width=width, height=height, sha256=sha256)


def read_image(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The ``H x W x 3`` uint8 RGB pixels of ``path``, EXIF orientation applied."""
    path = Path(path)
    with open_image(path, max_pixels) as image:
        return _decoded(image, path)


def probe_image(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Checks that ``path`` decodes completely and returns its oriented size and hash."""
    return read_image_file(path, max_pixels)[1]


def header_size(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """``(width, height)`` as the file's header gives them, without decoding the pixels. An EXIF
    orientation of a quarter turn may swap the two in what ``read_image`` returns (whether Pillow
    has applied it already at this point depends on the format and Pillow's version), and data
    truncated after a good header is not found here.

    Raises:
        ImageReadError: the file is missing, unreadable, not an image, over ``max_pixels`` or
            over ``MAX_ASPECT_RATIO``.
    """
    with open_image(path, max_pixels) as image:
        return image.size
