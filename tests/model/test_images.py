from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.images import ImageReadError, header_size, probe_image, read_image


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = 255  # a white band on the left of the stored pixels
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    shown = read_image(tmp_path / "rotated.jpg")
    assert shown.shape == (40, 20, 3)  # width and height swap
    assert shown[:10].mean() > 200 and shown[-10:].mean() < 50  # the band is now on top
    info = probe_image(tmp_path / "rotated.jpg")
    assert (info.width, info.height) == (20, 40)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".webp", ".jpg"])
def test_common_formats_read_as_rgb(tmp_path: Path, suffix: str) -> None:
    pixels = np.random.default_rng(0).integers(0, 255, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / f"a{suffix}", **({"lossless": True} if suffix == ".webp" else {}))
    image = read_image(tmp_path / f"a{suffix}")
    assert image.shape == (12, 16, 3) and image.dtype == np.uint8
    if suffix != ".jpg":
        assert np.array_equal(image, pixels)


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    Image.fromarray(gray).save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert image.shape == (12, 16, 3)
    assert all(np.array_equal(image[..., c], gray) for c in range(3))


def test_rgba_drops_alpha_keeping_colour(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.shape == (4, 4, 3) and (image[..., 0] == 200).all()


def test_sixteen_bit_images_are_stretched_over_their_range(tmp_path: Path) -> None:
    values = np.linspace(1000, 4000, 8 * 8).astype(np.uint16).reshape(8, 8)  # 12-bit content
    Image.fromarray(values).save(tmp_path / "deep.png")
    image = read_image(tmp_path / "deep.png")
    assert image.dtype == np.uint8 and image.min() == 0 and image.max() == 255
    assert np.all(np.diff(image[..., 0].reshape(-1).astype(int)) >= 0)  # order kept


def test_truncated_and_garbage_files_name_the_file(tmp_path: Path) -> None:
    Image.fromarray(np.full((200, 300, 3), 7, np.uint8)).save(tmp_path / "big.png")
    data = (tmp_path / "big.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) - 40])
    with pytest.raises(ImageReadError, match=r"cut.png: image data is truncated or corrupt"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(ImageReadError) as raised:
        read_image(tmp_path / "text.jpg")
    assert str(raised.value) == (
        f"{tmp_path / 'text.jpg'}: not a readable image (not a JPEG, PNG, BMP, TIFF or WebP file)"
    )


def test_pixel_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ImageReadError, match="over the limit"):
        read_image(tmp_path / "a.png", max_pixels=9_999)
    assert read_image(tmp_path / "a.png", max_pixels=10_000).shape == (100, 100, 3)


@pytest.mark.parametrize(
    "suffix, orientation", [(".jpg", o) for o in range(1, 9)] + [(suffix, 6) for suffix in (".png", ".webp", ".tif")]
)
def test_header_size_is_read_images_size_up_to_a_quarter_turn(tmp_path: Path, suffix: str, orientation: int) -> None:
    image = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(tmp_path / f"a{suffix}", exif=exif)
    height, width = read_image(tmp_path / f"a{suffix}").shape[:2]
    assert sorted(header_size(tmp_path / f"a{suffix}")) == sorted((width, height)) == [20, 40]


def test_header_size_names_the_file_and_the_problem_without_decoding(tmp_path: Path) -> None:
    Image.fromarray(np.full((200, 300, 3), 7, np.uint8)).save(tmp_path / "big.png")
    data = (tmp_path / "big.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) - 40])
    assert header_size(tmp_path / "cut.png") == (300, 200)  # a good header: truncation shows at decode
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(ImageReadError) as raised:
        header_size(tmp_path / "text.jpg")
    assert str(raised.value) == (
        f"{tmp_path / 'text.jpg'}: not a readable image (not a JPEG, PNG, BMP, TIFF or WebP file)"
    )
    with pytest.raises(ImageReadError, match=r"gone.png: image file not found"):
        header_size(tmp_path / "gone.png")
    with pytest.raises(ImageReadError, match=r"big.png: image has 0.1 megapixels, over the limit"):
        header_size(tmp_path / "big.png", max_pixels=59_999)
