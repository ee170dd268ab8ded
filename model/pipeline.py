"""The face pipeline, written once: photo bytes -> decode -> detect -> pick faces -> align -> network tensor.

Everything that reads faces from photos comes through here: the service (`app/engine.py`), `drface prepare`,
`drface eval` and training's CFP monitor (`training/photos.py`), the training data loader (aligned crops,
`read_aligned_crop`) and the scripts. The steps themselves live in `model.decode`, `model.detect` and
`model.align`; this module only chains them, so the chain exists once.

Two choices are parameters, never hidden rules:
- which faces: `limit` keeps the `limit` largest boxes (largest first: "the" face of a photo is the one with
  the largest box); `max_faces` refuses a photo with more faces than that (`TooManyFacesError`);
- no face (`no_face`): "raise" (`NoFaceError`, the service and the scripts), "center_crop" (the centred
  square crop of `align_center_crop`, marked `detected=False`: evaluation, so that every pair gets a score)
  or "empty" (an empty list: `drface prepare` skips the photo and reports it).

Errors are this module's own types (`FaceError` and subclasses) and `model.decode.ImageError` from decoding;
`app/errors.py` alone maps them to HTTP. `faces_to_tensor` turns aligned crops into the network's input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from model.align import ARCFACE_TEMPLATE_112, FACE_SIZE, align_center_crop, align_face
from model.decode import decode_image
from model.detect import FaceDetector

NoFacePolicy = Literal["raise", "center_crop", "empty"]


class FaceError(ValueError):
    """A photo that does not hold the faces asked for."""


class NoFaceError(FaceError):
    """No face was found (with `no_face="raise"`)."""


class TooManyFacesError(FaceError):
    """More faces than `max_faces`; `count` were found."""

    def __init__(self, message: str, count: int, maximum: int) -> None:
        super().__init__(message)
        self.count = count
        self.maximum = maximum


class FaceIndexError(FaceError):
    """A face asked for by position that the photo does not have."""


class NotAlignedError(FaceError):
    """A photo given as an aligned crop is not FACE_SIZE x FACE_SIZE."""


@dataclass(frozen=True)
class ImageLimits:
    """Largest photo accepted: `max_bytes` encoded bytes, `max_pixels` width x height."""

    max_bytes: int
    max_pixels: int


# Aligned crops (prepared datasets, .rec records, .bin sets) are small; anything far larger is not a crop.
CROP_LIMITS = ImageLimits(max_bytes=16 * 2**20, max_pixels=16 * FACE_SIZE * FACE_SIZE)


@dataclass(frozen=True)
class AlignedFace:
    """One face of a photo, in pixels of the decoded photo.

    box_xyxy: (4,) float32 [x1, y1, x2, y2]; score: detector score in [0, 1], None when nothing was
    detected (a given aligned crop, or the centre-crop fallback); landmarks: (5, 2) float32 (order of
    `model.detect.Detection`); aligned: (112, 112, 3) uint8 BGR crop the network sees; detected: False only
    for the centre-crop fallback.
    """

    box_xyxy: np.ndarray
    score: float | None
    landmarks: np.ndarray
    aligned: np.ndarray
    detected: bool = True


def read_faces(
    data: bytes,
    detector: FaceDetector,
    limits: ImageLimits,
    *,
    aligned: bool = False,
    limit: int | None = None,
    max_faces: int | None = None,
    no_face: NoFacePolicy = "raise",
) -> list[AlignedFace]:
    """Photo bytes -> its aligned faces, largest box first.

    With `aligned`, the photo must itself be a FACE_SIZE x FACE_SIZE aligned crop: it is the one face and
    nothing is detected. Otherwise see `find_faces` for `limit`, `max_faces` and `no_face`.
    Raises `model.decode.ImageError` (unreadable photo) and `FaceError`.
    """
    image = decode_image(data, limits.max_bytes, limits.max_pixels)
    if aligned:
        return [given_crop(image)]
    return find_faces(image, detector, limit=limit, max_faces=max_faces, no_face=no_face)


def find_faces(
    image_bgr: np.ndarray,
    detector: FaceDetector,
    *,
    limit: int | None = None,
    max_faces: int | None = None,
    no_face: NoFacePolicy = "raise",
) -> list[AlignedFace]:
    """The `limit` largest faces (all when None) of an (H, W, 3) uint8 BGR image, largest first, aligned.

    Raises TooManyFacesError when more than `max_faces` are found; when none is found, follows `no_face`.
    """
    detections = detector.detect(image_bgr)
    if not detections:
        if no_face == "raise":
            raise NoFaceError("no face found in the image")
        if no_face == "empty":
            return []
        return [_center_crop_face(image_bgr)]
    if max_faces is not None and len(detections) > max_faces:
        raise TooManyFacesError(
            f"found {len(detections)} faces, the limit is {max_faces} per image", len(detections), max_faces
        )
    return [
        AlignedFace(d.box_xyxy, d.score, d.landmarks, align_face(image_bgr, d.landmarks))
        for d in detections[:limit]
    ]


def pick_face(faces: Sequence[AlignedFace], index: int) -> AlignedFace:
    """Face number `index` (0 = largest) of `find_faces`' list; FaceIndexError when there are fewer."""
    if not 0 <= index < len(faces):
        raise FaceIndexError(f"face_index {index} is out of range: the image has {len(faces)} face(s)")
    return faces[index]


def given_crop(image_bgr: np.ndarray) -> AlignedFace:
    """An image that is already an aligned crop, as a face: its box is the whole crop, its landmarks the
    template's. Raises NotAlignedError unless it is FACE_SIZE x FACE_SIZE."""
    height, width = image_bgr.shape[:2]
    if (height, width) != (FACE_SIZE, FACE_SIZE):
        raise NotAlignedError(f"needs a {FACE_SIZE}x{FACE_SIZE} aligned face crop, got {width}x{height}")
    box = np.array([0, 0, FACE_SIZE, FACE_SIZE], dtype=np.float32)
    return AlignedFace(box, None, ARCFACE_TEMPLATE_112.copy(), image_bgr)


def read_aligned_crop(data: bytes, limits: ImageLimits) -> np.ndarray:
    """Bytes of an aligned crop (the output of `drface prepare`, a `.rec` record) -> (112, 112, 3) uint8 BGR.

    Never resizes: a crop of another size raises NotAlignedError (a resized photo is not an aligned face).
    """
    return given_crop(decode_image(data, limits.max_bytes, limits.max_pixels)).aligned


def _center_crop_face(image_bgr: np.ndarray) -> AlignedFace:
    height, width = image_bgr.shape[:2]
    box = np.array([0, 0, width, height], dtype=np.float32)
    return AlignedFace(box, None, np.zeros((5, 2), np.float32), align_center_crop(image_bgr), detected=False)


def faces_to_tensor(faces: Sequence[np.ndarray] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Aligned crops (B, 112, 112, 3) uint8 BGR -> the network input (B, 3, 112, 112) float32 RGB in [-1, 1].

    Takes a list of crops, one stacked array, or a uint8 tensor (on any device: training converts its
    batches where they live). The result is on the device of the input.
    """
    if isinstance(faces, torch.Tensor):
        batch = faces
    elif len(faces) == 0:
        batch = torch.empty((0, FACE_SIZE, FACE_SIZE, 3), dtype=torch.uint8)
    else:
        batch = torch.from_numpy(np.stack(faces) if not isinstance(faces, np.ndarray) else faces)
    if batch.ndim != 4 or tuple(batch.shape[1:]) != (FACE_SIZE, FACE_SIZE, 3) or batch.dtype != torch.uint8:
        raise ValueError(
            f"expected (B, {FACE_SIZE}, {FACE_SIZE}, 3) uint8 faces, got {tuple(batch.shape)} {batch.dtype}"
        )
    return batch.flip(-1).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous()
