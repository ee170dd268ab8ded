"""5-point alignment onto the ArcFace 112x112 template, and the centre-crop fallback."""

from __future__ import annotations

import cv2
import numpy as np

FACE_SIZE = 112
"""Side of an aligned face crop in pixels: the template's, and the network's input (`INPUT_SIZE`)."""

# The standard ArcFace template for 112x112 crops, (x, y) pixels of: left eye, right eye (as seen in the
# image), nose tip, left mouth corner, right mouth corner. Source: insightface,
# python-package/insightface/utils/face_align.py (`arcface_dst`), the template used to align MS1M / Glint360K.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)

# Fallback crop side as a fraction of the image's shorter side. The fraction that puts the eyes at the
# template's distance (35.2 px of 112) depends on how tightly the photo is cropped: median 1.18 on CFP
# (tight crops; the whole image is already a little too small) and 0.50 on celeba299 (LFW-style loose crops),
# measured with this detector on 200 images each (docs/detectors.md). The fallback mostly serves CFP-like
# evaluation images the detector missed, so it keeps the whole shorter side.
CENTER_CROP_FRACTION = 1.0


def estimate_similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping source onto target.

    Umeyama (1991), "Least-squares estimation of transformation parameters between two point patterns".
    source, target: (N, 2) float points, N >= 2.
    Returns the (2, 3) float64 matrix M with target ~ M @ [x, y, 1].
    """
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"expected two (N, 2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / src.shape[0]
    u, singular, vt = np.linalg.svd(covariance)
    reflection = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        reflection[1, 1] = -1.0
    rotation = u @ reflection @ vt
    src_var = (src_c**2).sum() / src.shape[0]
    if src_var <= 0:
        raise ValueError("source points are all identical")
    scale = float((singular * np.diag(reflection)).sum() / src_var)
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align_face(image_bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Warp the face so its 5 landmarks land on `ARCFACE_TEMPLATE_112`.

    image_bgr: (H, W, 3) uint8 BGR; landmarks: (5, 2) pixels in the order of `model.detect.Detection`.
    Returns the (112, 112, 3) uint8 BGR aligned face (outside the image: black).
    """
    matrix = estimate_similarity(np.asarray(landmarks, dtype=np.float64).reshape(5, 2), ARCFACE_TEMPLATE_112)
    return cv2.warpAffine(
        image_bgr, matrix, (FACE_SIZE, FACE_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def align_center_crop(image_bgr: np.ndarray, fraction: float = CENTER_CROP_FRACTION) -> np.ndarray:
    """Fallback when no face is found: a centred square crop resized to (112, 112, 3) uint8 BGR.

    The square's side is ``fraction`` of the shorter image side (default `CENTER_CROP_FRACTION`, chosen so a
    centred face in a loose face crop comes out at roughly the template's scale).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    height, width = image_bgr.shape[:2]
    side = max(1, int(round(min(height, width) * fraction)))
    top, left = (height - side) // 2, (width - side) // 2
    crop = image_bgr[top : top + side, left : left + side]
    interpolation = cv2.INTER_AREA if side > FACE_SIZE else cv2.INTER_LINEAR
    return cv2.resize(crop, (FACE_SIZE, FACE_SIZE), interpolation=interpolation)
