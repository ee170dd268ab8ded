"""DRFACE_DETECT_SIDE: every photo detected at one working size, through the real app."""

from __future__ import annotations

import numpy as np
import pytest

from app.settings import Settings

pytestmark = [pytest.mark.data, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def _face(client, photo: bytes) -> dict:
    response = client.post("/v1/embed", files={"image": ("face.jpg", photo, "image/jpeg")})
    assert response.status_code == 200, response.text
    return response.json()["faces"][0]


def test_detection_at_192_px_finds_the_same_face(app_factory, face_a) -> None:
    with app_factory() as default, app_factory(detect_side=192) as small:
        config = small.app.state.engine.detector.config
        assert (config.min_side, config.max_side) == (192, 192)
        assert default.app.state.engine.detector.config.max_side == 640
        usual, shrunk = _face(default, face_a), _face(small, face_a)
    overlap = np.minimum(usual["box"][2:], shrunk["box"][2:]) - np.maximum(
        usual["box"][:2], shrunk["box"][:2]
    )
    assert (overlap > 0).all()
    assert float(np.dot(usual["embedding"], shrunk["embedding"])) >= 0.9


def test_empty_or_too_small_detect_side(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRFACE_DETECT_SIDE", "")
    assert Settings().detect_side is None
    monkeypatch.setenv("DRFACE_DETECT_SIDE", "16")
    with pytest.raises(ValueError, match="detect_side"):
        Settings()
