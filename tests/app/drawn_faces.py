"""Faces drawn with OpenCV: no real person, yet the detector finds them (for pictures that get committed)."""

from __future__ import annotations

import cv2
import numpy as np

SIDE = 320
_BGR = tuple[int, int, int]


def _darker(color: _BGR, factor: float) -> _BGR:
    return (round(color[0] * factor), round(color[1] * factor), round(color[2] * factor))


def drawn_face(
    seed: int = 0,
    skin: _BGR = (150, 180, 225),
    hair: _BGR = (40, 50, 70),
    iris: _BGR = (90, 60, 30),
    tilt_deg: float = 0.0,
    shift_px: int = 0,
) -> np.ndarray:
    """(SIDE, SIDE, 3) uint8 BGR: a flat cartoon head and shoulders, softened and with a little noise."""
    image = np.zeros((SIDE, SIDE, 3), np.uint8)
    rows = np.linspace(0.0, 1.0, SIDE)[:, None, None]
    image[:] = (np.array([200, 190, 170]) * (1 - rows) + np.array([150, 140, 120]) * rows).astype(np.uint8)
    cx, cy = SIDE // 2 + shift_px, 170
    cv2.ellipse(image, (cx, cy + 140), (130, 60), 0, 180, 360, (90, 70, 60), -1)  # shoulders
    cv2.rectangle(image, (cx - 30, cy + 60), (cx + 30, cy + 120), _darker(skin, 0.9), -1)  # neck
    cv2.ellipse(image, (cx, cy - 15), (88, 100), 0, 0, 360, hair, -1)
    cv2.ellipse(image, (cx, cy), (72, 95), 0, 0, 360, skin, -1)
    for side in (-1, 1):
        cv2.ellipse(image, (cx + side * 72, cy + 5), (10, 20), 0, 0, 360, skin, -1)  # ear
    cv2.ellipse(image, (cx, cy - 70), (78, 45), 0, 180, 360, hair, -1)  # fringe
    for side in (-1, 1):
        ex, ey = cx + side * 30, cy - 18
        cv2.ellipse(image, (ex, ey - 18), (18, 4), 0, 180, 360, hair, 3)  # brow
        cv2.ellipse(image, (ex, ey), (16, 8), 0, 0, 360, (245, 245, 245), -1)
        cv2.circle(image, (ex, ey), 7, iris, -1)
        cv2.circle(image, (ex, ey), 3, (10, 10, 10), -1)
        cv2.circle(image, (ex + 2, ey - 2), 1, (255, 255, 255), -1)
        cv2.ellipse(image, (ex, ey), (16, 8), 0, 180, 360, (40, 40, 60), 2)  # upper lid
    shade = _darker(skin, 0.75)
    cv2.line(image, (cx, cy - 10), (cx - 6, cy + 22), shade, 2)  # nose
    cv2.ellipse(image, (cx, cy + 24), (12, 6), 0, 0, 180, shade, 2)
    for side in (-1, 1):
        cv2.circle(image, (cx + side * 7, cy + 24), 3, (60, 60, 90), -1)  # nostril
    cv2.ellipse(image, (cx, cy + 50), (24, 9), 0, 0, 360, (90, 90, 180), -1)  # lips
    cv2.line(image, (cx - 24, cy + 50), (cx + 24, cy + 50), (50, 50, 110), 2)
    image = cv2.GaussianBlur(image, (0, 0), 1.5)
    noise = np.random.default_rng(seed).normal(0.0, 4.0, image.shape)
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    if tilt_deg:
        rotation = cv2.getRotationMatrix2D((SIDE / 2, SIDE / 2), tilt_deg, 1.0)
        image = cv2.warpAffine(image, rotation, (SIDE, SIDE), borderMode=cv2.BORDER_REPLICATE)
    return image


def two_drawn_people() -> tuple[np.ndarray, np.ndarray]:
    """Two different drawn faces: another skin, hair, pose and position."""
    return drawn_face(0), drawn_face(1, skin=(120, 160, 200), hair=(20, 30, 40), tilt_deg=8.0, shift_px=-10)
