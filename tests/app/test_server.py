"""The same API through a real `drface serve` (uvicorn) process on 127.0.0.1."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator

import cv2
import httpx
import numpy as np
import pytest
from service_testkit import REPO_ROOT, jpeg

pytestmark = [pytest.mark.data, pytest.mark.slow]


@pytest.fixture(scope="module")
def http(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url, timeout=30) as client:
        yield client


def test_server_is_ready_and_healthy(http: httpx.Client) -> None:
    assert http.get("/healthz").json()["status"] == "ok"
    assert http.get("/readyz").json()["status"] == "ready"


def test_embed_over_http_multipart_and_json_agree(http, face_a) -> None:
    multipart = http.post("/v1/embed", files={"image": ("a.jpg", face_a, "image/jpeg")})
    as_json = http.post("/v1/embed", json={"image": base64.b64encode(face_a).decode()})
    assert multipart.status_code == as_json.status_code == 200
    first, second = multipart.json()["faces"][0]["embedding"], as_json.json()["faces"][0]["embedding"]
    assert np.allclose(first, second, atol=1e-6)


def test_same_photo_shifted_scores_higher_than_a_different_person(http, face_a_bgr, face_b) -> None:
    shifted = jpeg(np.roll(face_a_bgr, shift=(-6, 8), axis=(0, 1)), 85)

    def similarity(second: bytes) -> float:
        files = {
            "image1": ("a.jpg", jpeg(face_a_bgr), "image/jpeg"),
            "image2": ("2.jpg", second, "image/jpeg"),
        }
        response = http.post("/v1/verify", files=files)
        assert response.status_code == 200, response.text
        return response.json()["similarity"]

    assert similarity(shifted) > similarity(face_b)


def test_region_map_png_over_http_decodes(http, face_a) -> None:
    response = http.post(
        "/v1/region-map", files={"image": ("a.jpg", face_a, "image/jpeg")}, data={"format": "png"}
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR) is not None


def test_bad_inputs_get_4xx_and_the_server_stays_ready(http, face_a) -> None:
    cases = [
        (dict(content=b""), 422),
        (dict(content=b"hello", headers={"content-type": "text/plain"}), 415),
        (dict(files={"image": ("a.jpg", face_a[: len(face_a) // 3], "image/jpeg")}), 400),
        (dict(files={"file": ("a.jpg", face_a, "image/jpeg")}), 422),
        (dict(json={"image": "%%%"}), 422),
        (dict(files={"image": ("a.txt", b"not a photo at all", "text/plain")}), 415),
    ]
    for request, status in cases:
        response = http.post("/v1/embed", **request)
        assert response.status_code == status, (request, response.text)
        assert set(response.json()["error"]) == {"code", "message"}
    assert http.get("/readyz").status_code == 200


def test_chunked_upload_over_the_limit_is_refused(http) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(64):  # 16 MB, no Content-Length: only counting while reading can stop it
            yield b"\0" * (256 * 1024)

    try:
        response = http.post("/v1/embed", content=body(), headers={"content-type": "application/json"})
    except httpx.TransportError:  # the server may close the connection before the client finishes sending
        pass
    else:
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "too_large"
    assert http.get("/readyz").status_code == 200


def test_serve_refuses_to_start_without_weights(tmp_path) -> None:
    missing = tmp_path / "nothing.safetensors"
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--weights", str(missing), "--port", "1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "nothing.safetensors" in result.stderr
