"""The API's successful answers, through httpx against the in-process app with the shipped model."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_testkit import jpeg, png

from model.align import FACE_SIZE, align_face

pytestmark = [pytest.mark.data, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def client(app_factory, cfp_root) -> Iterator[TestClient]:
    with app_factory() as client:
        yield client


def embed(client: TestClient, image: bytes, **options: object) -> dict:
    fields = {key: str(value).lower() for key, value in options.items()}
    response = client.post("/v1/embed", files={"image": ("face.jpg", image, "image/jpeg")}, data=fields)
    assert response.status_code == 200, response.text
    return response.json()


def test_health_routes_answer(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and "@" in ready["model"]


def test_embed_returns_a_unit_embedding_with_box_and_landmarks_inside_the_face(client, face_a) -> None:
    body = embed(client, face_a)
    info = client.get("/v1/model").json()
    assert len(body["faces"]) == 1
    face = body["faces"][0]
    assert len(face["embedding"]) == info["embedding_dim"]
    assert np.linalg.norm(face["embedding"]) == pytest.approx(1.0, abs=1e-4)
    assert face["score"] > 0.9
    x1, y1, x2, y2 = face["box"]
    assert 0 <= x1 < x2 <= 250 and 0 <= y1 < y2 <= 250
    landmarks = np.array(face["landmarks"])
    assert landmarks.shape == (5, 2)
    assert np.all(
        (landmarks[:, 0] > x1) & (landmarks[:, 0] < x2) & (landmarks[:, 1] > y1) & (landmarks[:, 1] < y2)
    )
    assert landmarks[0, 0] < landmarks[1, 0]  # left eye (as seen) has the smaller x
    assert body["model"] == f"{info['name']}@{info['version']}" and body["time_ms"] > 0


def test_traced_network_gives_the_eager_networks_embeddings(client, face_a_bgr) -> None:
    from model.embed import embed_faces
    from model.pipeline import faces_to_tensor
    from model.trace import TracedNetwork

    engine = client.app.state.engine
    assert isinstance(engine.network, TracedNetwork)  # tracing works for the shipped architecture
    faces = faces_to_tensor(
        [np.ascontiguousarray(face_a_bgr[60:172, 60:172]), np.zeros((112, 112, 3), np.uint8)]
    )
    traced, eager = embed_faces(engine.network, faces), embed_faces(engine.model, faces)
    assert (traced * eager).sum(dim=1).min() > 0.9999


def test_json_base64_gives_the_same_embedding_as_multipart(client, face_a) -> None:
    as_file = embed(client, face_a)["faces"][0]["embedding"]
    encoded = "data:image/jpeg;base64," + base64.encodebytes(face_a).decode()  # with line breaks
    response = client.post("/v1/embed", json={"image": encoded})
    assert response.status_code == 200, response.text
    assert np.allclose(response.json()["faces"][0]["embedding"], as_file, atol=1e-6)


def test_aligned_crop_gives_the_embedding_of_the_detected_face(client, face_a, face_a_bgr) -> None:
    detected = embed(client, face_a)["faces"][0]
    crop = align_face(face_a_bgr, np.array(detected["landmarks"], dtype=np.float32))
    assert crop.shape == (FACE_SIZE, FACE_SIZE, 3)
    body = embed(client, png(crop), aligned=True)
    face = body["faces"][0]
    assert face["score"] is None and face["box"] == [0, 0, FACE_SIZE, FACE_SIZE]
    # Landmarks are rounded to 0.01 px in the response, so the crops differ by a hair.
    assert float(np.dot(face["embedding"], detected["embedding"])) > 0.99


def test_same_photo_shifted_scores_higher_than_a_different_person(client, face_a_bgr, face_b) -> None:
    # A shifted, re-encoded copy of the same photo goes through detection and alignment
    # again and must land on nearly the same crop, hence nearly the same embedding, with any weights.
    shifted = np.roll(face_a_bgr, shift=(7, -5), axis=(0, 1))
    same = client.post(
        "/v1/verify",
        files={
            "image1": ("a.jpg", jpeg(face_a_bgr), "image/jpeg"),
            "image2": ("a2.jpg", jpeg(shifted, 85), "image/jpeg"),
        },
    ).json()
    different = client.post(
        "/v1/verify",
        files={
            "image1": ("a.jpg", jpeg(face_a_bgr), "image/jpeg"),
            "image2": ("b.jpg", face_b, "image/jpeg"),
        },
    ).json()
    assert same["similarity"] > different["similarity"]
    assert same["verified"] is (same["similarity"] >= same["threshold"])
    assert len(same["faces"]) == 2 and all(len(f["embedding"]) > 0 for f in same["faces"])


def test_genuine_pairs_score_higher_than_impostor_pairs(client, cfp_root) -> None:
    from service_testkit import cfp_photo

    def similarity(first: str, second: str) -> float:
        files = {
            "image1": ("1.jpg", cfp_photo(cfp_root, first), "image/jpeg"),
            "image2": ("2.jpg", cfp_photo(cfp_root, second), "image/jpeg"),
        }
        return client.post("/v1/verify", files=files).json()["similarity"]

    # CFP identities 001-006: two frontal photos of one person vs frontal photos of the next person.
    # Averages over 6 pairs each: the shipped model is ~77% accurate per pair, not per-pair reliable.
    people = [f"{i:03d}" for i in range(1, 7)]
    genuine = [similarity(f"{p}/frontal/01.jpg", f"{p}/frontal/02.jpg") for p in people]
    others = people[1:] + people[:1]
    impostor = [
        similarity(f"{p}/frontal/01.jpg", f"{q}/frontal/01.jpg") for p, q in zip(people, others, strict=True)
    ]
    assert np.mean(genuine) > np.mean(impostor) + 0.1


def test_verify_uses_the_threshold_of_the_request(client, face_a, face_b) -> None:
    files = {"image1": ("a.jpg", face_a, "image/jpeg"), "image2": ("b.jpg", face_b, "image/jpeg")}
    low = client.post("/v1/verify", files=files, data={"threshold": "-1"}).json()
    high = client.post("/v1/verify", files=files, data={"threshold": "1"}).json()
    assert (low["threshold"], low["verified"], low["operating_point"]) == (-1.0, True, "custom")
    assert (high["threshold"], high["verified"]) == (1.0, high["similarity"] >= 1.0)
    info = client.get("/v1/model").json()
    default = client.post("/v1/verify", files=files).json()
    assert (default["threshold"], default["operating_point"]) == (info["threshold"], info["operating_point"])


def test_verify_defaults_to_the_far_1e_3_operating_point_and_takes_named_ones(client, face_a, face_b) -> None:
    info = client.get("/v1/model").json()
    assert info["operating_point"] == "far_1e-3"
    assert (
        info["threshold"]
        == info["thresholds"]["far_1e-3"]
        == info["operating_points"]["far_1e-3"]["threshold"]
    )
    files = {"image1": ("a.jpg", face_a, "image/jpeg"), "image2": ("b.jpg", face_b, "image/jpeg")}
    for name in info["thresholds"]:
        body = client.post("/v1/verify", files=files, data={"threshold": name}).json()
        assert (body["threshold"], body["operating_point"]) == (info["thresholds"][name], name)
        assert body["verified"] is (body["similarity"] >= body["threshold"])
    as_json = {
        "image1": base64.b64encode(face_a).decode(),
        "image2": base64.b64encode(face_b).decode(),
        "threshold": "best_accuracy",
    }
    assert client.post("/v1/verify", json=as_json).json()["operating_point"] == "best_accuracy"


def test_verify_refuses_an_operating_point_the_card_does_not_have(client, face_a, face_b) -> None:
    files = {"image1": ("a.jpg", face_a, "image/jpeg"), "image2": ("b.jpg", face_b, "image/jpeg")}
    for name, says in (("far_1e-9", "available: best_accuracy"), ("strict", "threshold")):
        response = client.post("/v1/verify", files=files, data={"threshold": name})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_request"
        assert says in response.json()["error"]["message"]


def test_region_map_has_every_drconv_layer_with_documented_shape_and_values(client, face_a) -> None:
    info = client.get("/v1/model").json()
    response = client.post("/v1/region-map", files={"image": ("a.jpg", face_a, "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [layer["name"] for layer in body["layers"]] == info["drconv_layers"]
    assert body["face"]["embedding"] is None and body["face"]["score"] > 0.9
    for layer in body["layers"]:
        mask = np.array(layer["mask"])
        assert mask.shape == (layer["height"], layer["width"])
        assert layer["regions"] == info["region_num"]
        assert mask.min() >= 0 and mask.max() < layer["regions"]
        assert FACE_SIZE % layer["height"] == 0  # a whole number of face pixels per mask cell


def test_region_map_png_decodes_to_a_picture_of_every_layer(client, face_a) -> None:
    response = client.post(
        "/v1/region-map", json={"image": base64.b64encode(face_a).decode(), "format": "png"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    picture = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    layers = len(client.get("/v1/model").json()["drconv_layers"])
    assert picture is not None and picture.shape[0] > FACE_SIZE and picture.shape[1] >= 2 * FACE_SIZE
    assert layers > 0


def test_embed_with_region_map_adds_the_maps_to_each_face(client, face_a) -> None:
    face = embed(client, face_a, region_map=True)["faces"][0]
    plain = client.post("/v1/region-map", files={"image": ("a.jpg", face_a, "image/jpeg")}).json()
    assert face["region_map"] == plain["layers"]


def test_model_info_comes_from_the_card(client) -> None:
    from service_testkit import make_settings

    from model.artifact import DEFAULT_WEIGHTS, load_card

    card = load_card(make_settings().weights or DEFAULT_WEIGHTS)
    info = client.get("/v1/model").json()
    assert (info["name"], info["version"], info["trained"]) == (card.name, card.version, card.trained)
    assert (info["embedding_dim"], info["region_num"]) == (card.embedding_dim, card.region_num)
    assert info["thresholds"] == card.thresholds
    assert info["operating_points"] == card.operating_points


def test_metrics_count_requests_faces_and_errors(client, face_a) -> None:
    def value(text: str, prefix: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))

    before = client.get("/metrics").text
    embed(client, face_a)
    client.post("/v1/embed", content=b"not an image", headers={"content-type": "text/plain"})
    after = client.get("/metrics").text
    embeds = 'drface_http_requests_total{method="POST",route="/v1/embed",status="200"}'
    assert value(after, embeds) == value(before, embeds) + 1
    assert value(after, "drface_faces_detected_total") == value(before, "drface_faces_detected_total") + 1
    errors = 'drface_errors_total{code="unsupported_media_type"}'
    assert value(after, errors) == value(before, errors) + 1
    assert 'drface_http_request_duration_seconds_bucket{le="0.04",method="POST",route="/v1/embed"}' in after
    assert "drface_inference_duration_seconds_count" in after and "drface_ready 1.0" in after


def test_openapi_gives_each_body_type_its_own_operation_and_documents_the_error_shape(client) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, files in (("/v1/embed", ["image"]), ("/v1/verify", ["image1", "image2"])):
        form = spec["paths"][path]["post"]["requestBody"]["content"]
        body = spec["paths"][f"{path}/json"]["post"]["requestBody"]["content"]
        assert set(form) == {"multipart/form-data"} and set(body) == {"application/json"}
        form_model = schemas[form["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]]
        json_model = schemas[body["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]]
        assert set(files) <= set(form_model["required"]) and set(files) <= set(json_model["required"])
        assert {form_model["properties"][name]["format"] for name in files} == {"binary"}
        assert {json_model["properties"][name]["contentEncoding"] for name in files} == {"base64"}
    assert "ErrorResponse" in schemas and "not_ready" in schemas["ErrorCode"]["enum"]
    assert spec["components"]["schemas"]["FaceOut"]["properties"]["embedding"]["description"]
    assert client.get("/docs").status_code == 200


def test_unknown_route_has_the_error_shape(client) -> None:
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_flip_setting_chooses_one_or_two_network_passes(app_factory):
    from app.openapi import example_face_jpeg
    from model.artifact import load_artifact
    from model.embed import embed_faces
    from model.pipeline import CROP_LIMITS, faces_to_tensor, read_aligned_crop

    crop = example_face_jpeg()
    batch = faces_to_tensor([read_aligned_crop(crop, CROP_LIMITS)])
    model = load_artifact().model
    embedded = {}
    for flip in (True, False):
        with app_factory(flip=flip) as client:
            response = client.post("/v1/embed", files={"image": crop}, data={"aligned": "true"})
        assert response.status_code == 200, response.text
        embedded[flip] = np.asarray(response.json()["faces"][0]["embedding"])
        expected = embed_faces(model, batch, flip=flip)[0].numpy()
        assert float(embedded[flip] @ expected) > 0.9999
    assert float(embedded[True] @ embedded[False]) < 0.9999  # the mirror pass changes the embedding
