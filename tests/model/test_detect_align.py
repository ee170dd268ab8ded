"""FaceDetector on real CFP photos, 5-point alignment onto the ArcFace template, and the network tensor."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model.align import (
    ARCFACE_TEMPLATE_112,
    align_center_crop,
    align_face,
    estimate_similarity,
)
from model.detect import DetectorConfig, FaceDetector
from model.pipeline import faces_to_tensor

# A handful of identities spread over CFP; frontal 01 and profile 01 of each.
CFP_SAMPLES = ("001", "057", "123", "250", "388", "499")


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def _cfp_image(cfp_root: Path, identity: str, pose: str, number: str = "01") -> np.ndarray:
    image = cv2.imread(str(cfp_root / "Data" / "Images" / identity / pose / f"{number}.jpg"))
    assert image is not None
    return image


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    angle = np.deg2rad(angle_deg)
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_similarity_estimate_recovers_a_known_transform() -> None:
    truth = _similarity(17.0, 2.3, 40.0, -12.0)
    source = np.random.default_rng(1).uniform(0, 100, (5, 2))
    np.testing.assert_allclose(estimate_similarity(source, _apply(truth, source)), truth, atol=1e-9)


def test_align_maps_landmarks_onto_the_template_within_one_pixel() -> None:
    # Place the template in a larger image, rotated and scaled; draw a blob at each landmark; align;
    # the blobs' centroids in the 112x112 output must sit on the template.
    to_photo = _similarity(-23.0, 2.7, 150.0, 60.0)
    landmarks = _apply(to_photo, ARCFACE_TEMPLATE_112.astype(np.float64))
    yy, xx = np.mgrid[0:500, 0:500]
    for index, (x, y) in enumerate(landmarks):
        photo = np.zeros((500, 500, 3), dtype=np.uint8)
        blob = 255.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 4.0**2))
        photo[..., 1] = blob.astype(np.uint8)
        aligned = align_face(photo, landmarks).astype(np.float64)[..., 1]
        assert aligned.shape == (112, 112)
        gy, gx = np.mgrid[0:112, 0:112]
        centroid = np.array([(aligned * gx).sum(), (aligned * gy).sum()]) / aligned.sum()
        assert np.linalg.norm(centroid - ARCFACE_TEMPLATE_112[index]) < 1.0


@pytest.mark.data
@pytest.mark.parametrize("pose", ["frontal", "profile"])
def test_detector_finds_the_face_in_cfp_photos(detector: FaceDetector, cfp_root: Path, pose: str) -> None:
    for identity in CFP_SAMPLES:
        image = _cfp_image(cfp_root, identity, pose)
        faces = detector.detect(image)
        assert faces, f"no face in CFP {identity}/{pose}/01.jpg"
        face = faces[0]
        height, width = image.shape[:2]
        x1, y1, x2, y2 = face.box_xyxy
        assert (x2 - x1) * (y2 - y1) > 0.15 * height * width  # CFP photos are loose crops of one face
        assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
        assert 0.0 <= face.score <= 1.0
        if pose == "frontal":
            assert face.landmarks[0, 0] < face.landmarks[1, 0]  # left eye as seen in the image first
            assert face.landmarks[3, 0] < face.landmarks[4, 0]
            assert face.landmarks[:2, 1].max() < face.landmarks[2, 1] < face.landmarks[3:, 1].min()


@pytest.mark.data
def test_detect_then_align_then_detect_lands_on_the_template(detector: FaceDetector, cfp_root: Path) -> None:
    for identity in CFP_SAMPLES[:3]:
        image = _cfp_image(cfp_root, identity, "frontal")
        landmarks = detector.detect(image)[0].landmarks
        aligned = align_face(image, landmarks)
        faces = detector.detect(aligned)  # a tight 112x112 crop: exercises the small-image padding
        assert faces, f"aligned crop of CFP {identity} lost its face"
        # Where the warp sent the original landmarks is where the detector finds them again ...
        warped = _apply(estimate_similarity(landmarks, ARCFACE_TEMPLATE_112), landmarks.astype(np.float64))
        assert np.linalg.norm(faces[0].landmarks - warped, axis=1).mean() < 3.0
        # ... and near the template: a real face differs from the template's geometry by a few pixels.
        assert np.linalg.norm(faces[0].landmarks - ARCFACE_TEMPLATE_112, axis=1).mean() < 8.0


@pytest.mark.data
def test_several_faces_are_returned_largest_first(detector: FaceDetector, cfp_root: Path) -> None:
    big = cv2.resize(_cfp_image(cfp_root, "001", "frontal"), (300, 300))
    small = cv2.resize(_cfp_image(cfp_root, "123", "frontal"), (150, 150))
    canvas = np.full((300, 600, 3), 128, dtype=np.uint8)
    canvas[:, 300:] = big
    canvas[75:225, 50:200] = small
    faces = detector.detect(canvas)
    assert len(faces) == 2
    assert faces[0].box_xyxy[0] > 300 and faces[1].box_xyxy[2] < 300  # the large one (right) comes first
    assert faces[0].area > faces[1].area
    assert len(FaceDetector(DetectorConfig(max_faces=1)).detect(canvas)) == 1


@pytest.mark.data
def test_large_photo_is_downscaled_and_mapped_back(detector: FaceDetector, cfp_root: Path) -> None:
    side = detector.config.max_side
    image = cv2.resize(_cfp_image(cfp_root, "250", "frontal"), (side, side), interpolation=cv2.INTER_CUBIC)
    large = cv2.resize(image, (2 * side, 2 * side), interpolation=cv2.INTER_CUBIC)
    native, downscaled = detector.detect(image)[0], detector.detect(large)[0]
    np.testing.assert_allclose(downscaled.landmarks / 2.0, native.landmarks, atol=1.5)
    np.testing.assert_allclose(downscaled.box_xyxy / 2.0, native.box_xyxy, atol=1.5)


@pytest.mark.data
def test_large_faces_get_the_landmarks_of_a_face_sized_image(cfp_root: Path) -> None:
    # Landmarks are best when a face spans ~250 px; a face filling a large photo gets a second pass.
    refined, single = FaceDetector(), FaceDetector(DetectorConfig(refine_face_px=None))
    errors: dict[str, list[float]] = {"refined": [], "single": []}
    for identity in CFP_SAMPLES[:5]:
        image = cv2.resize(_cfp_image(cfp_root, identity, "frontal"), (300, 300))
        large = cv2.resize(image, (1200, 1200), interpolation=cv2.INTER_CUBIC)
        reference = refined.detect(image)[0].landmarks
        eye_distance = np.linalg.norm(reference[1] - reference[0])
        for name, detector in (("refined", refined), ("single", single)):
            landmarks = detector.detect(large)[0].landmarks / 4.0
            errors[name].append(np.linalg.norm(landmarks - reference, axis=1).mean() / eye_distance)
    assert np.mean(errors["refined"]) < 0.05
    assert np.mean(errors["refined"]) < np.mean(errors["single"])


@pytest.mark.data
def test_detect_is_thread_safe(detector: FaceDetector, cfp_root: Path) -> None:
    images = [_cfp_image(cfp_root, identity, "frontal") for identity in CFP_SAMPLES]
    expected = [detector.detect(image)[0].landmarks for image in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda image: detector.detect(image)[0].landmarks, images * 3))
    for index, landmarks in enumerate(results):
        np.testing.assert_allclose(landmarks, expected[index % len(images)], atol=1e-4)


def test_no_face_in_blank_or_tiny_images(detector: FaceDetector) -> None:
    assert detector.detect(np.full((200, 300, 3), 90, dtype=np.uint8)) == []
    assert detector.detect(np.zeros((1, 1, 3), dtype=np.uint8)) == []


def test_center_crop_is_a_centred_square_resized_to_112() -> None:
    image = np.zeros((100, 300, 3), dtype=np.uint8)
    image[:, 100:200] = 255  # exactly the central square
    crop = align_center_crop(image)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    assert crop.min() == 255


def test_faces_to_tensor_is_rgb_in_minus_one_to_one() -> None:
    face = np.zeros((112, 112, 3), dtype=np.uint8)
    face[..., 2] = 255  # red in BGR
    batch = faces_to_tensor([face, np.full((112, 112, 3), 127, dtype=np.uint8)])
    assert batch.shape == (2, 3, 112, 112) and batch.dtype == torch.float32
    assert batch[0, 0].eq(1.0).all() and batch[0, 1].eq(-1.0).all() and batch[0, 2].eq(-1.0).all()
    assert batch.abs().max() <= 1.0
    assert faces_to_tensor([]).shape == (0, 3, 112, 112)
