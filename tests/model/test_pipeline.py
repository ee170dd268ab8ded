"""The face pipeline's choices: which faces, what happens without one, aligned crops, the network tensor."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from model.align import ARCFACE_TEMPLATE_112, FACE_SIZE
from model.decode import ImageError
from model.detect import Detection
from model.pipeline import (
    FaceIndexError,
    ImageLimits,
    NoFaceError,
    NotAlignedError,
    TooManyFacesError,
    faces_to_tensor,
    find_faces,
    pick_face,
    read_aligned_crop,
    read_faces,
)

LIMITS = ImageLimits(max_bytes=10_000_000, max_pixels=10_000_000)


class StubDetector:
    """Returns fixed detections, largest first, like `FaceDetector.detect`."""

    def __init__(self, count: int) -> None:
        self.detections = [
            Detection(
                np.array([0, 0, 100 - 10 * i, 100 - 10 * i], np.float32),
                0.9,
                (ARCFACE_TEMPLATE_112 * (1 + i)).astype(np.float32),
            )
            for i in range(count)
        ]

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        return list(self.detections)


def _png(height: int, width: int) -> bytes:
    return cv2.imencode(".png", np.full((height, width, 3), 90, np.uint8))[1].tobytes()


IMAGE = np.full((300, 300, 3), 90, np.uint8)


def test_faces_come_largest_first_and_limit_keeps_the_largest():
    faces = find_faces(IMAGE, StubDetector(3), limit=2)
    assert [float(face.box_xyxy[2]) for face in faces] == [100.0, 90.0]
    assert all(face.aligned.shape == (FACE_SIZE, FACE_SIZE, 3) and face.detected for face in faces)


def test_more_faces_than_max_faces_is_refused():
    with pytest.raises(TooManyFacesError) as error:
        find_faces(IMAGE, StubDetector(3), max_faces=2)
    assert (error.value.count, error.value.maximum) == (3, 2)


def test_no_face_policy_raise_empty_or_center_crop():
    with pytest.raises(NoFaceError):
        find_faces(IMAGE, StubDetector(0))
    assert find_faces(IMAGE, StubDetector(0), no_face="empty") == []
    (crop,) = find_faces(IMAGE, StubDetector(0), no_face="center_crop")
    assert not crop.detected and crop.score is None and crop.aligned.shape == (FACE_SIZE, FACE_SIZE, 3)


def test_pick_face_out_of_range_is_a_face_index_error():
    faces = find_faces(IMAGE, StubDetector(2))
    assert pick_face(faces, 1) is faces[1]
    with pytest.raises(FaceIndexError, match="face_index 2"):
        pick_face(faces, 2)


def test_aligned_photo_is_the_one_face_without_detection():
    (face,) = read_faces(_png(FACE_SIZE, FACE_SIZE), StubDetector(0), LIMITS, aligned=True)
    assert face.score is None
    np.testing.assert_array_equal(face.landmarks, ARCFACE_TEMPLATE_112)
    with pytest.raises(NotAlignedError, match="got 120x112"):
        read_faces(_png(FACE_SIZE, 120), StubDetector(0), LIMITS, aligned=True)


def test_aligned_crops_are_never_resized():
    assert read_aligned_crop(_png(FACE_SIZE, FACE_SIZE), LIMITS).shape == (FACE_SIZE, FACE_SIZE, 3)
    with pytest.raises(NotAlignedError):
        read_aligned_crop(_png(200, 180), LIMITS)
    with pytest.raises(ImageError):
        read_aligned_crop(b"not an image", LIMITS)


def test_tensor_is_rgb_in_minus_one_to_one_for_lists_arrays_and_tensors():
    faces = np.zeros((2, FACE_SIZE, FACE_SIZE, 3), np.uint8)
    faces[..., 0] = 255  # blue in BGR
    for given in (list(faces), faces, torch.from_numpy(faces)):
        batch = faces_to_tensor(given)
        assert batch.shape == (2, 3, FACE_SIZE, FACE_SIZE) and batch.dtype == torch.float32
        assert batch.is_contiguous()
        assert batch[:, 2].eq(1).all() and batch[:, :2].eq(-1).all()  # blue is the last RGB channel
    assert faces_to_tensor([]).shape == (0, 3, FACE_SIZE, FACE_SIZE)
    with pytest.raises(ValueError):
        faces_to_tensor([np.zeros((100, 100, 3), np.uint8)])
