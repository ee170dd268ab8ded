"""decode_image: every supported format, orientation, colour conversions, limits and typed errors.

All inputs are encoded here in code (OpenCV or Pillow), so the expected pixels are known exactly.
"""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from model.decode import (
    ImageDecodeError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
    decode_image,
    read_header,
)

LIMITS = {"max_bytes": 10_000_000, "max_pixels": 10_000_000}
RED_BGR = np.array([0, 0, 255])


def _two_tone_rgb(height: int = 20, width: int = 40) -> np.ndarray:
    """(H, W, 3) RGB image: left half red, right half blue, so orientation and channel order are visible."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, : width // 2] = (255, 0, 0)
    image[:, width // 2 :] = (0, 0, 255)
    return image


def _pil_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("JPEG", {"quality": 95}),
        ("PNG", {}),
        ("WEBP", {"lossless": True}),
        ("WEBP", {}),
        ("BMP", {}),
        ("GIF", {}),
    ],
)
def test_each_format_decodes_to_bgr_uint8(fmt: str, options: dict) -> None:
    data = _pil_bytes(Image.fromarray(_two_tone_rgb()), fmt, **options)
    image = decode_image(data, **LIMITS)
    assert image.shape == (20, 40, 3) and image.dtype == np.uint8
    np.testing.assert_allclose(image[10, 5], RED_BGR, atol=40)  # left half red, in BGR order
    np.testing.assert_allclose(image[10, 35], [255, 0, 0], atol=40)  # right half blue


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = _pil_bytes(Image.fromarray(_two_tone_rgb()), "JPEG", quality=95, exif=exif)
    image = decode_image(data, **LIMITS)
    assert image.shape == (40, 20, 3)
    np.testing.assert_allclose(image[5, 10], RED_BGR, atol=40)  # the left (red) half is now on top
    np.testing.assert_allclose(image[35, 10], [255, 0, 0], atol=40)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_of_alpha_images_matches_opencv(fmt: str, orientation: int) -> None:
    # OpenCV applies EXIF orientation itself except when the alpha channel is read; our own handling of
    # that case must give exactly what OpenCV gives for the same pixels without alpha.
    exif = Image.Exif()
    exif[0x0112] = orientation
    rgb = np.random.default_rng(orientation).integers(0, 255, (6, 10, 3), dtype=np.uint8)
    alpha = np.full((6, 10), 255, dtype=np.uint8)
    alpha[0, 0] = 254  # not fully opaque, or the encoder drops the alpha channel; changes that pixel by <= 1
    rgba = np.dstack([rgb, alpha])
    options = {"exif": exif, **({"lossless": True} if fmt == "WEBP" else {})}
    reference = decode_image(_pil_bytes(Image.fromarray(rgb), fmt, **options), **LIMITS)
    with_alpha = _pil_bytes(Image.fromarray(rgba, "RGBA"), fmt, **options)
    assert read_header(with_alpha).has_alpha
    np.testing.assert_allclose(decode_image(with_alpha, **LIMITS), reference, atol=1)
    assert reference.shape[:2] == ((10, 6) if orientation >= 5 else (6, 10))


def test_grayscale_becomes_three_equal_channels() -> None:
    gray = np.tile(np.arange(0, 200, 10, dtype=np.uint8), (8, 1))
    ok, encoded = cv2.imencode(".png", gray)
    image = decode_image(encoded.tobytes(), **LIMITS)
    assert image.shape == (8, 20, 3)
    np.testing.assert_array_equal(image[..., 0], gray)
    np.testing.assert_array_equal(image[..., 2], gray)


def test_rgba_is_composited_on_white() -> None:
    rgba = np.zeros((6, 6, 4), dtype=np.uint8)
    rgba[:, :3] = (255, 0, 0, 255)  # opaque red on the left, fully transparent black on the right
    image = decode_image(_pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG"), **LIMITS)
    np.testing.assert_array_equal(image[0, 0], RED_BGR)
    np.testing.assert_array_equal(image[0, 5], [255, 255, 255])


def test_16_bit_png_is_scaled_to_8_bit() -> None:
    bgr16 = np.zeros((4, 4, 3), dtype=np.uint16)
    bgr16[..., 2] = 65535
    bgr16[..., 1] = 32896  # 128 * 257
    ok, encoded = cv2.imencode(".png", bgr16)
    assert read_header(encoded.tobytes()).format == "png"
    image = decode_image(encoded.tobytes(), **LIMITS)
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image[0, 0], [0, 128, 255])


def test_cmyk_jpeg_is_converted_to_bgr() -> None:
    data = _pil_bytes(Image.fromarray(_two_tone_rgb()).convert("CMYK"), "JPEG", quality=95)
    image = decode_image(data, **LIMITS)
    assert image.shape == (20, 40, 3)
    np.testing.assert_allclose(image[10, 5], RED_BGR, atol=40)


def test_one_pixel_image_decodes() -> None:
    ok, encoded = cv2.imencode(".png", np.full((1, 1, 3), 7, dtype=np.uint8))
    assert decode_image(encoded.tobytes(), **LIMITS).shape == (1, 1, 3)


def test_truncated_jpeg_is_a_decode_error() -> None:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = _pil_bytes(Image.fromarray(noise), "JPEG")
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(data[: len(data) // 2], **LIMITS)


def test_truncated_jpeg_with_an_embedded_thumbnail_is_a_decode_error() -> None:
    # An EXIF thumbnail is a whole JPEG (with its own scan and end marker) inside an APP1 segment.
    thumbnail = _pil_bytes(Image.fromarray(_two_tone_rgb(8, 8)), "JPEG")
    payload = b"Exif\x00\x00" + thumbnail
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    main = _pil_bytes(Image.fromarray(noise), "JPEG")
    data = main[:2] + app1 + main[2:]
    assert decode_image(data, **LIMITS).shape == (64, 64, 3)
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(data[: len(data) - len(main) // 2], **LIMITS)


def test_truncated_png_is_a_decode_error() -> None:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = _pil_bytes(Image.fromarray(noise), "PNG")
    with pytest.raises(ImageDecodeError):
        decode_image(data[: len(data) // 2], **LIMITS)


def _png_bomb_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but whose data is a few bytes: a decompression bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\x00" * 64)
    chunk += struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    return b"\x89PNG\r\n\x1a\n" + chunk


def test_png_claiming_huge_size_is_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(_png_bomb_header(100_000, 100_000), max_bytes=1_000_000, max_pixels=50_000_000)
    assert info.value.limit == "pixels" and info.value.value == 10_000_000_000


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "BMP", "GIF"])
def test_pixel_limit_is_read_from_every_header(fmt: str) -> None:
    data = _pil_bytes(Image.fromarray(_two_tone_rgb(30, 50)), fmt)
    assert (read_header(data).width, read_header(data).height) == (50, 30)
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(data, max_bytes=1_000_000, max_pixels=1499)
    assert info.value.limit == "pixels"


def test_over_byte_limit_is_refused() -> None:
    data = _pil_bytes(Image.fromarray(_two_tone_rgb()), "PNG")
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(data, max_bytes=len(data) - 1, max_pixels=10_000)
    assert info.value.limit == "bytes"


def test_empty_bytes_is_a_decode_error() -> None:
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"", **LIMITS)


def test_text_is_unsupported() -> None:
    with pytest.raises(UnsupportedImageError):
        decode_image(b"hello, this is not an image\n", **LIMITS)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_is_unsupported(fmt: str) -> None:
    frames = [Image.fromarray(_two_tone_rgb()), Image.fromarray(255 - _two_tone_rgb())]
    data = _pil_bytes(frames[0], fmt, save_all=True, append_images=frames[1:])
    with pytest.raises(UnsupportedImageError, match="animated"):
        decode_image(data, **LIMITS)


def test_every_error_is_an_image_error() -> None:
    for error in (ImageDecodeError, UnsupportedImageError, ImageTooLargeError):
        assert issubclass(error, ImageError)
