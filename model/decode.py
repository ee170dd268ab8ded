"""Photo bytes -> (H, W, 3) uint8 BGR array, with limits checked before the pixels are decoded.

Supported: JPEG, PNG, WebP, BMP and single-frame GIF. The image size is read from the file header first
(a few hundred bytes, parsed here), so a decompression bomb such as a tiny PNG that claims 100000 x 100000
pixels is refused before any pixel memory is allocated. Everything else is OpenCV's ``imdecode``:
EXIF orientation is applied (OpenCV does it for every read flag except ``IMREAD_UNCHANGED``, which images with
an alpha channel need; for those we read the orientation tag here), grayscale and CMYK become BGR, 16-bit
samples are scaled to 8 bits, and alpha is composited onto a white background.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

ImageFormat = Literal["jpeg", "png", "webp", "bmp", "gif"]

_JPEG_EOI = b"\xff\xd9"
# Colour types in a PNG IHDR that carry an alpha channel: 4 (gray + alpha), 6 (RGB + alpha).
_PNG_ALPHA_COLOR_TYPES = (4, 6)
_WEBP_VP8X_ANIMATION = 0x02
_WEBP_VP8X_ALPHA = 0x10


class ImageError(ValueError):
    """Base class of every error caused by the bytes a user sent as a photo."""


class ImageDecodeError(ImageError):
    """The bytes are empty, truncated or corrupt."""


class UnsupportedImageError(ImageError):
    """The bytes are a format (or a variant, e.g. an animation) that is not supported."""


class ImageTooLargeError(ImageError):
    """The image exceeds a limit; ``limit`` says which one ("bytes" or "pixels")."""

    def __init__(self, message: str, limit: Literal["bytes", "pixels"], value: int, maximum: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value
        self.maximum = maximum


@dataclass(frozen=True)
class ImageHeader:
    """What the file header says: format, size in pixels, alpha channel, number of frames (>1: animated)."""

    format: ImageFormat
    width: int
    height: int
    has_alpha: bool = False
    animated: bool = False


def sniff_format(data: bytes) -> ImageFormat:
    """Identify the format from the magic bytes; raises `UnsupportedImageError` for anything else."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    raise UnsupportedImageError(
        "unsupported or unrecognised image format; send a JPEG, PNG, WebP or BMP photo"
    )


def read_header(data: bytes) -> ImageHeader:
    """Parse the image size (and alpha / animation flags) from the header without decoding pixels.

    Raises `UnsupportedImageError` for unknown formats and `ImageDecodeError` for a malformed header.
    """
    fmt = sniff_format(data)
    try:
        return _HEADER_PARSERS[fmt](data)
    except (struct.error, IndexError) as exc:
        raise ImageDecodeError(f"{fmt.upper()} header is truncated or corrupt") from exc


def _png_header(data: bytes) -> ImageHeader:
    if data[12:16] != b"IHDR":
        raise ImageDecodeError("PNG file does not start with an IHDR chunk")
    width, height, _bit_depth, color_type = struct.unpack(">IIBB", data[16:26])
    # APNG: an acTL chunk before the first IDAT announces an animation; decoders show its first frame,
    # which is the still image, so it is accepted like a plain PNG.
    return ImageHeader("png", width, height, has_alpha=color_type in _PNG_ALPHA_COLOR_TYPES)


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, int]]:
    """Walk the top-level JPEG markers: yields (marker, offset of its payload), up to and including SOS.

    Segment lengths are followed, so an EXIF thumbnail (a whole JPEG inside APP1) is skipped over.
    """
    pos = 2
    while True:
        if data[pos] != 0xFF:
            raise ImageDecodeError("JPEG marker expected but not found")
        while data[pos] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos]
        pos += 1
        if marker in (0x01, *range(0xD0, 0xD8)):  # stand-alone markers, no length
            continue
        if marker == 0xD9:
            raise ImageDecodeError("JPEG ends before its image data")
        yield marker, pos
        if marker == 0xDA:
            return
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        pos += length


def _jpeg_header(data: bytes) -> ImageHeader:
    for marker, pos in _jpeg_segments(data):
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) hold precision, height, width.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            _precision, height, width = struct.unpack(">BHH", data[pos + 2 : pos + 7])
            return ImageHeader("jpeg", width, height)
    raise ImageDecodeError("JPEG has no frame header (SOF) before its image data")


def _webp_header(data: bytes) -> ImageHeader:
    chunk = data[12:16]
    payload = data[20:40]
    if chunk == b"VP8 ":
        if payload[3:6] != b"\x9d\x01\x2a":
            raise ImageDecodeError("WebP VP8 frame has no start code")
        width, height = struct.unpack("<HH", payload[6:10])
        return ImageHeader("webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L":
        if payload[0] != 0x2F:
            raise ImageDecodeError("WebP VP8L stream has no signature")
        (bits,) = struct.unpack("<I", payload[1:5])
        width = (bits & 0x3FFF) + 1
        height = ((bits >> 14) & 0x3FFF) + 1
        return ImageHeader("webp", width, height, has_alpha=bool((bits >> 28) & 1))
    if chunk == b"VP8X":
        if len(payload) < 10:
            raise IndexError("VP8X chunk too short")
        flags = payload[0]
        width = int.from_bytes(payload[4:7], "little") + 1
        height = int.from_bytes(payload[7:10], "little") + 1
        return ImageHeader(
            "webp",
            width,
            height,
            has_alpha=bool(flags & _WEBP_VP8X_ALPHA),
            animated=bool(flags & _WEBP_VP8X_ANIMATION),
        )
    raise ImageDecodeError(f"unknown WebP chunk {chunk!r}")


def _bmp_header(data: bytes) -> ImageHeader:
    (dib_size,) = struct.unpack("<I", data[14:18])
    if dib_size == 12:  # BITMAPCOREHEADER: 16-bit unsigned sizes
        width, height = struct.unpack("<HH", data[18:22])
        return ImageHeader("bmp", width, height)
    width, height = struct.unpack("<ii", data[18:26])
    # 32-bit BMPs usually leave the fourth byte at 0 (not alpha), so BMP is always read as opaque.
    return ImageHeader("bmp", abs(width), abs(height))


def _gif_header(data: bytes) -> ImageHeader:
    width, height, flags = struct.unpack("<HHB", data[6:11])
    return ImageHeader("gif", width, height, animated=_gif_frame_count(data, flags) > 1)


def _gif_frame_count(data: bytes, screen_flags: int) -> int:
    """Count image descriptors by walking the GIF block structure (stops early at the second frame)."""
    pos = 13
    if screen_flags & 0x80:  # global colour table
        pos += 3 * (2 ** ((screen_flags & 0x07) + 1))
    frames = 0
    while pos < len(data) and frames < 2:
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then data sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        elif block == 0x2C:  # image descriptor
            frames += 1
            local_flags = data[pos + 9]
            pos += 10
            if local_flags & 0x80:
                pos += 3 * (2 ** ((local_flags & 0x07) + 1))
            pos = _skip_sub_blocks(data, pos + 1)  # +1: LZW minimum code size
        else:
            raise ImageDecodeError("GIF block structure is corrupt")
    return frames


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    while True:
        size = data[pos]
        pos += 1
        if size == 0:
            return pos
        pos += size


_HEADER_PARSERS = {
    "png": _png_header,
    "jpeg": _jpeg_header,
    "webp": _webp_header,
    "bmp": _bmp_header,
    "gif": _gif_header,
}


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Decode photo bytes to an (H, W, 3) uint8 BGR array.

    Args:
        data: the encoded file (JPEG, PNG, WebP, BMP or a single-frame GIF).
        max_bytes: largest accepted ``len(data)``.
        max_pixels: largest accepted width * height, checked from the header before decoding.

    Raises:
        ImageTooLargeError: over ``max_bytes`` or ``max_pixels`` (its ``limit`` says which).
        UnsupportedImageError: unknown format, or an animated GIF / WebP.
        ImageDecodeError: empty, truncated or corrupt data.
    """
    if not isinstance(data, bytes):
        data = bytes(data)  # bytearray / memoryview: the header parsers need bytes methods
    if len(data) == 0:
        raise ImageDecodeError("image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageTooLargeError(
            f"image is {len(data)} bytes, the limit is {max_bytes} bytes", "bytes", len(data), max_bytes
        )
    header = read_header(data)
    if header.animated:
        raise UnsupportedImageError(f"animated {header.format.upper()} images are not supported")
    if header.width <= 0 or header.height <= 0:
        raise ImageDecodeError(f"{header.format.upper()} header gives an empty size")
    pixels = header.width * header.height
    if pixels > max_pixels:
        raise ImageTooLargeError(
            f"image is {header.width}x{header.height} = {pixels} pixels, the limit is {max_pixels} pixels",
            "pixels",
            pixels,
            max_pixels,
        )
    if header.format == "jpeg" and not _jpeg_has_end(data):
        # libjpeg fills a truncated scan with grey and only warns; treat it as the corruption it is.
        raise ImageDecodeError("JPEG is truncated (no end-of-image marker after the image data)")
    buffer = np.frombuffer(data, dtype=np.uint8)
    flags = cv2.IMREAD_UNCHANGED if header.has_alpha else cv2.IMREAD_COLOR
    image = cv2.imdecode(buffer, flags)
    if image is None or image.size == 0:
        raise ImageDecodeError(f"{header.format.upper()} data is truncated or corrupt")
    image = _to_bgr8(image)
    if header.has_alpha:
        image = _apply_orientation(image, _exif_orientation(data, header.format))
    return image


def _jpeg_has_end(data: bytes) -> bool:
    # Inside entropy-coded data 0xFF is always stuffed (FF 00) or a restart marker, so an FF D9 after the
    # first top-level start-of-scan can only be the real end of image. Bytes after it (camera trailers) are
    # fine. The SOS is found by walking segments: an EXIF thumbnail has an SOS and an EOI of its own.
    try:
        scan = next(pos for marker, pos in _jpeg_segments(data) if marker == 0xDA)
    except (StopIteration, IndexError, struct.error):
        return False
    return data.find(_JPEG_EOI, scan) >= 0


def _exif_orientation(data: bytes, fmt: ImageFormat) -> int:
    """EXIF orientation tag (1-8; 1 when absent or unreadable) of a PNG (eXIf chunk) or WebP (EXIF chunk)."""
    try:
        tiff = _exif_payload(data, fmt)
        if tiff is None:
            return 1
        if tiff.startswith(b"Exif\x00\x00"):
            tiff = tiff[6:]
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        (ifd,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
        for entry in range(count):
            pos = ifd + 2 + 12 * entry
            tag, _type, _count, value = struct.unpack(order + "HHIH", tiff[pos : pos + 10])
            if tag == 0x0112:
                return value if 1 <= value <= 8 else 1
    except (struct.error, KeyError, IndexError):
        pass
    return 1


def _exif_payload(data: bytes, fmt: ImageFormat) -> bytes | None:
    if fmt == "png":
        pos = 8
        while pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos : pos + 8])
            if kind == b"eXIf":
                return data[pos + 8 : pos + 8 + length]
            if kind in (b"IDAT", b"IEND"):
                return None  # eXIf must come before the image data
            pos += 12 + length
    elif fmt == "webp":
        pos = 12
        while pos + 8 <= len(data):
            kind, length = struct.unpack("<4sI", data[pos : pos + 8])
            if kind == b"EXIF":
                return data[pos + 8 : pos + 8 + length]
            pos += 8 + length + (length & 1)
    return None


def _apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn the stored pixels into the displayed image, per the EXIF orientation values 1-8."""
    if orientation in (5, 6, 7, 8):
        image = cv2.transpose(image)  # 5: transpose; 6, 7, 8: transpose then a flip
    flip = {2: 1, 3: -1, 4: 0, 6: 1, 7: -1, 8: 0}.get(orientation)
    return image if flip is None else cv2.flip(image, flip)


def _to_bgr8(image: np.ndarray) -> np.ndarray:
    """Any OpenCV decode result (gray / BGR / BGRA, 8 or 16 bit) -> (H, W, 3) uint8 BGR."""
    if image.dtype == np.uint16:
        image = (image.astype(np.uint32) * 255 + 32767) // 65535
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255)
    image = image.astype(np.uint8, copy=False)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if channels == 2:  # gray + alpha
        gray, alpha = image[..., 0], image[..., 1]
        return _composite_on_white(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), alpha)
    if channels == 4:
        return _composite_on_white(image[..., :3], image[..., 3])
    return np.ascontiguousarray(image)


def _composite_on_white(bgr: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    # Transparent pixels often hold arbitrary colour; a white background is what a viewer would show.
    weight = alpha.astype(np.float32)[..., None] / 255.0
    out = bgr.astype(np.float32) * weight + 255.0 * (1.0 - weight)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
