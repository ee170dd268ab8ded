"""DRFACE_MICRO_BATCH: off, idle and always give the same embeddings through the real app, alone and with
concurrent requests; `idle` spreads a lone request's face and mirror over the network workers."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.settings import available_cores

pytestmark = [pytest.mark.data, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

MODES = ("off", "idle", "always")


@pytest.fixture(scope="module")
def clients(app_factory, cfp_root) -> Iterator[dict[str, TestClient]]:
    with (
        app_factory(micro_batch="off", torch_threads=1, max_concurrent=2) as off,
        app_factory(micro_batch="idle", torch_threads=1, max_concurrent=2) as idle,
        app_factory(micro_batch="always", torch_threads=1, max_concurrent=4) as always,
    ):
        yield {"off": off, "idle": idle, "always": always}


def _embedding(client: TestClient, photo: bytes) -> np.ndarray:
    response = client.post("/v1/embed", files={"image": ("face.jpg", photo, "image/jpeg")})
    assert response.status_code == 200, response.text
    return np.array(response.json()["faces"][0]["embedding"])


def test_every_mode_gives_the_same_embedding(clients, face_a, face_b) -> None:
    for photo in (face_a, face_b):
        off, idle, always = (_embedding(clients[mode], photo) for mode in MODES)
        assert float(np.dot(off, idle)) >= 0.99999 and float(np.dot(off, always)) >= 0.99999


def test_a_lone_request_in_idle_mode_runs_face_and_mirror_on_two_workers(clients, face_a) -> None:
    batcher = clients["idle"].app.state.engine.batcher
    batcher.batch_sizes.clear()
    _embedding(clients["idle"], face_a)
    assert list(batcher.batch_sizes) == ([1, 1] if len(batcher.workers) >= 2 else [2])
    assert clients["off"].app.state.engine.batcher is None


def test_concurrent_requests_each_get_their_own_faces(clients, face_a, face_b) -> None:
    expected = {id(photo): _embedding(clients["off"], photo) for photo in (face_a, face_b)}
    photos = [face_a, face_b] * 6
    for mode in ("idle", "always"):
        with ThreadPoolExecutor(6) as pool:
            embeddings = list(pool.map(lambda photo, m=mode: _embedding(clients[m], photo), photos))
        for photo, embedding in zip(photos, embeddings, strict=True):
            assert float(np.dot(embedding, expected[id(photo)])) >= 0.99999, mode


def test_a_request_after_the_batcher_closed_gets_503_not_ready(app_factory, face_a) -> None:
    with app_factory(micro_batch="always") as client:
        client.app.state.engine.batcher.close()
        response = client.post("/v1/embed", files={"image": ("face.jpg", face_a, "image/jpeg")})
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"


def test_idle_mode_without_a_second_core_runs_no_workers(app_factory) -> None:
    with app_factory(micro_batch="idle", torch_threads=available_cores()) as client:
        assert client.app.state.engine.batcher is None
