"""Reading images from disk the same way everywhere: the store, the model and the GUI.

Qt-free and torch-free. Images come back as ``H x W x 3`` ``uint8`` RGB arrays with the EXIF
orientation applied, so the pixel grid matches what a photo viewer shows and what labelme and
CVAT annotate. Grayscale and palette images become RGB, an alpha channel is dropped, and 16-bit
images are stretched to 8 bits over their own value range (docs/decisions/0001-image-reading.md).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_MAX_PIXELS = 200_000_000

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


def _open_oriented(data: bytes, path: Path, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
    except Exception as error:  # PIL raises several types for unreadable files
        raise _unreadable(path, error) from None
    _check_pixels(path, *image.size, max_pixels)
    try:
        image.load()  # decodes everything: a truncated file fails here, not later in the GUI
        return ImageOps.exif_transpose(image)
    except Exception as error:
        raise ImageReadError(path, f"image data is truncated or corrupt ({error})") from None


def _unreadable(path: Path, error: Exception) -> ImageReadError:
    """Pillow's complaint about a file's contents, in words that name no Python object."""
    if isinstance(error, UnidentifiedImageError):  # its text is "cannot identify image file <BytesIO ...>"
        return ImageReadError(path, "not a readable image (no image format that Pillow reads)")
    if "truncat" in str(error).lower():
        return ImageReadError(path, f"image data is truncated or corrupt ({error})")
    return ImageReadError(path, f"not a readable image ({error})")


def _check_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageReadError(
            path,
            f"image has {width * height / 1e6:.1f} megapixels, over the limit of "
            f"{max_pixels / 1e6:.0f} (raise it with --max-pixels)",
        )


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
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(path, "image file not found") from None
    except OSError as error:
        raise ImageReadError(path, f"cannot read the file ({error.strerror})") from None
    pixels = _to_rgb8(_open_oriented(data, path, max_pixels))
    height, width = pixels.shape[:2]
    return pixels, ImageInfo(width=width, height=height, sha256=hashlib.sha256(data).hexdigest())


def read_image(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The ``H x W x 3`` uint8 RGB pixels of ``path``, EXIF orientation applied."""
    return read_image_file(path, max_pixels)[0]


def probe_image(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Checks that ``path`` decodes completely and returns its oriented size and hash."""
    return read_image_file(path, max_pixels)[1]


def header_size(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """``(width, height)`` as the file's header gives them, without decoding the pixels. An EXIF
    orientation of a quarter turn may swap the two in what ``read_image`` returns (whether Pillow
    has applied it already at this point depends on the format and Pillow's version), and data
    truncated after a good header is not found here.

    Raises:
        ImageReadError: the file is missing, unreadable, not an image or over ``max_pixels``.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:  # reads the header, not the pixels
            width, height = image.size
    except FileNotFoundError:
        raise ImageReadError(path, "image file not found") from None
    except OSError as error:
        if error.strerror:  # the file system's error, not Pillow's
            raise ImageReadError(path, f"cannot read the file ({error.strerror})") from None
        raise _unreadable(path, error) from None
    except Exception as error:  # PIL raises several types for unreadable files
        raise _unreadable(path, error) from None
    _check_pixels(path, width, height, max_pixels)
    return width, height
