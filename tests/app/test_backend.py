"""DRFACE_BACKEND=onnxruntime: the same API answers as the torch backend, region maps included."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_testkit import jpeg

from model.onnx_backend import OnnxNetwork

pytestmark = [pytest.mark.data, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def clients(app_factory, cfp_root) -> Iterator[dict[str, TestClient]]:
    with app_factory() as torch_client, app_factory(backend="onnxruntime") as onnx_client:
        yield {"torch": torch_client, "onnxruntime": onnx_client}


def _post(client: TestClient, route: str, **images: bytes) -> dict:
    files = {name: (f"{name}.jpg", data, "image/jpeg") for name, data in images.items()}
    response = client.post(route, files=files)
    assert response.status_code == 200, response.text
    return response.json()


def test_onnxruntime_backend_runs_the_exported_network(clients) -> None:
    engine = clients["onnxruntime"].app.state.engine
    assert isinstance(engine.network, OnnxNetwork) and engine.mask_network is engine.network


def test_both_backends_give_the_same_embeddings(clients, face_a) -> None:
    torch_face, onnx_face = (_post(c, "/v1/embed", image=face_a)["faces"][0] for c in clients.values())
    assert float(np.dot(torch_face["embedding"], onnx_face["embedding"])) >= 0.9999


def test_both_backends_give_the_same_region_maps(clients, face_a) -> None:
    torch_body, onnx_body = (_post(c, "/v1/region-map", image=face_a) for c in clients.values())
    assert [layer["name"] for layer in onnx_body["layers"]] == [
        layer["name"] for layer in torch_body["layers"]
    ]
    equal = sum(
        int((np.array(t["mask"]) == np.array(o["mask"])).sum())
        for t, o in zip(torch_body["layers"], onnx_body["layers"], strict=True)
    )
    total = sum(np.array(t["mask"]).size for t in torch_body["layers"])
    assert equal / total >= 0.999


def test_both_backends_make_the_same_verify_decisions(clients, face_a_bgr, face_b) -> None:
    shifted = jpeg(np.roll(face_a_bgr, shift=(7, -5), axis=(0, 1)), 85)
    for second in (shifted, face_b):
        torch_body, onnx_body = (
            _post(c, "/v1/verify", image1=jpeg(face_a_bgr), image2=second) for c in clients.values()
        )
        assert onnx_body["verified"] is torch_body["verified"]
        assert onnx_body["similarity"] == pytest.approx(torch_body["similarity"], abs=1e-4)
