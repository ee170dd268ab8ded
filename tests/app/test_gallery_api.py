"""The gallery over HTTP: subjects, enrolment, verify against a subject, identify, delete (in-process app).

Photos are synthetic 112x112 crops sent with `aligned=true` (no detection): each crop has its own embedding,
which is all these tests need. Real faces are in test_gallery_identification.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_testkit import aligned_crop as crop
from service_testkit import png, running_app
from throwaway_postgres import fresh_database

from app.gallery.cli import reembed
from app.gallery.store import ModelId

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def photo_form(seed: int, **fields: str) -> dict:
    return {
        "files": {"image": (f"{seed}.png", crop(seed), "image/png")},
        "data": {"aligned": "true", **fields},
    }


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with running_app() as client:
        yield client


def create(client: TestClient, subject_id: str, **fields: object) -> dict:
    response = client.post("/v1/subjects", json={"id": subject_id, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def enrol(client: TestClient, subject_id: str, seed: int) -> dict:
    response = client.post(f"/v1/subjects/{subject_id}/faces", **photo_form(seed))
    assert response.status_code in (200, 201), response.text
    return response.json()


def test_enrol_then_verify_and_identify_the_subject(client: TestClient) -> None:
    create(client, "flow-ada", name="Ada", metadata={"team": "R&D"})
    create(client, "flow-bob", name="Bob")
    enrolled = enrol(client, "flow-ada", 1)
    assert enrolled["created"] and enrolled["face"]["current_model"] and not enrolled["face"]["photo_stored"]
    enrol(client, "flow-ada", 2)
    enrol(client, "flow-bob", 3)

    verify = client.post("/v1/subjects/flow-ada/verify", **photo_form(2)).json()
    assert verify["verified"] and verify["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert verify["operating_point"] == "far_1e-3"

    identify = client.post("/v1/identify", **photo_form(3, top_k="2")).json()
    assert identify["result"] == "match" and identify["subject_id"] == "flow-bob"
    assert identify["candidates"][0]["name"] == "Bob" and len(identify["candidates"]) == 2
    assert identify["searched_templates"] >= 3

    detail = client.get("/v1/subjects/flow-ada").json()
    assert detail["face_count"] == 2 and detail["metadata"] == {"team": "R&D"}
    assert {face["photo_sha256"] for face in detail["faces"]} == {
        hashlib.sha256(crop(seed)).hexdigest() for seed in (1, 2)
    }


def test_enrolling_the_same_photo_twice_adds_nothing(client: TestClient) -> None:
    create(client, "twice")
    first = client.post("/v1/subjects/twice/faces", **photo_form(10))
    again = client.post("/v1/subjects/twice/faces", **photo_form(10))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["face"]["id"] == first.json()["face"]["id"] and not again.json()["created"]
    assert client.get("/v1/subjects/twice").json()["face_count"] == 1


def test_a_stranger_is_unknown(client: TestClient) -> None:
    create(client, "stranger-test")
    enrol(client, "stranger-test", 20)
    answer = client.post("/v1/identify", **photo_form(21, threshold="0.9999")).json()
    assert answer["result"] == "unknown" and answer["subject_id"] is None
    assert answer["candidates"] and not any(c["match"] for c in answer["candidates"])


def test_deleted_faces_and_subjects_are_no_longer_found(client: TestClient) -> None:
    create(client, "gone")
    face_id = enrol(client, "gone", 30)["face"]["id"]
    enrol(client, "gone", 31)
    assert client.delete(f"/v1/subjects/gone/faces/{face_id}").status_code == 204
    assert client.delete(f"/v1/subjects/gone/faces/{face_id}").json()["error"]["code"] == "not_found"
    best = client.post("/v1/identify", **photo_form(30, top_k="100")).json()["candidates"]
    assert face_id not in {c["face_id"] for c in best}
    assert client.delete("/v1/subjects/gone").status_code == 204
    identify = client.post("/v1/identify", **photo_form(31, top_k="100")).json()
    assert "gone" not in {c["subject_id"] for c in identify["candidates"]}
    for response in (
        client.get("/v1/subjects/gone"),
        client.delete("/v1/subjects/gone"),
        client.post("/v1/subjects/gone/faces", **photo_form(32)),
        client.post("/v1/subjects/gone/verify", **photo_form(32)),
    ):
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_subject_ids_are_unique_and_validated(client: TestClient) -> None:
    create(client, "unique-1")
    taken = client.post("/v1/subjects", json={"id": "unique-1"})
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "conflict"
    bad = client.post("/v1/subjects", json={"id": "has space"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
    generated = client.post("/v1/subjects", json={}).json()
    assert len(generated["id"]) == 32 and generated["face_count"] == 0


def test_subjects_are_listed_in_pages(client: TestClient) -> None:
    for number in range(5):
        create(client, f"page-{number}")
    seen, after = [], None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = client.get("/v1/subjects", params=params).json()
        seen += [s["id"] for s in page["subjects"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == sorted(seen) and {f"page-{n}" for n in range(5)} <= set(seen)
    assert client.get("/v1/subjects", params={"limit": 0}).status_code == 422


def test_an_empty_subject_and_a_faceless_photo_are_clear_errors(client: TestClient) -> None:
    create(client, "empty")
    empty = client.post("/v1/subjects/empty/verify", **photo_form(40))
    assert empty.status_code == 409 and empty.json()["error"]["code"] == "no_enrolled_face"
    blank = png(np.full((200, 200, 3), 200, np.uint8))
    faceless = client.post("/v1/subjects/empty/faces", files={"image": ("b.png", blank, "image/png")})
    assert faceless.status_code == 400 and faceless.json()["error"]["code"] == "no_face"


def test_templates_of_another_model_are_never_compared(client: TestClient) -> None:
    store = client.app.state.gallery.store
    create(client, "old-model")
    store.add_template(
        "old-model",
        ModelId("drface-old", "1"),
        np.ones(512, np.float32) / np.sqrt(512),
        "ab" * 32,
        [0, 0, 1, 1],
        None,
        True,
    )
    answer = client.post("/v1/subjects/old-model/verify", **photo_form(50))
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "model_mismatch"
    assert "drface gallery reembed" in answer.json()["error"]["message"]
    detail = client.get("/v1/subjects/old-model").json()
    assert detail["faces"][0]["model"] == "drface-old@1" and not detail["faces"][0]["current_model"]
    identify = client.post("/v1/identify", **photo_form(50, top_k="100")).json()
    assert "old-model" not in {c["subject_id"] for c in identify["candidates"]}
    assert identify["templates_of_other_models"] >= 1


def test_reembed_recomputes_templates_from_kept_photos() -> None:
    with running_app(gallery_keep_photos=True) as client:
        gallery = client.app.state.gallery
        create(client, "kept")
        face_id = enrol(client, "kept", 60)["face"]["id"]
        assert client.get("/v1/subjects/kept").json()["faces"][0]["photo_stored"]
        with gallery.store._transaction(write=True) as sql:  # as if enrolled under an older model
            sql.run("UPDATE templates SET model_name = 'drface-old' WHERE id = ?", (face_id,))
        assert client.post("/v1/subjects/kept/verify", **photo_form(60)).status_code == 409
        report = reembed(client.app.state.engine, gallery.store)
        assert report.reembedded == 1 and report.without_photo == 0 and not report.failed
        assert client.post("/v1/subjects/kept/verify", **photo_form(60)).json()["verified"]
        assert client.post("/v1/identify", **photo_form(60)).json()["subject_id"] == "kept"
        assert client.delete("/v1/subjects/kept").status_code == 204
        assert gallery.store.template_photo(face_id) is None


def test_gallery_routes_need_the_api_key_when_set() -> None:
    with running_app(api_keys="secret") as client:
        assert client.get("/v1/subjects").status_code == 401
        assert client.post("/v1/identify", **photo_form(1)).status_code == 401
        assert client.get("/v1/subjects", headers={"X-API-Key": "secret"}).status_code == 200


def test_gallery_routes_are_in_the_openapi_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/subjects",
        "/v1/subjects/{subject_id}",
        "/v1/subjects/{subject_id}/faces",
        "/v1/subjects/{subject_id}/faces/{face_id}",
        "/v1/subjects/{subject_id}/verify",
        "/v1/identify",
    ):
        assert path in paths, path
    assert "multipart/form-data" in paths["/v1/identify"]["post"]["requestBody"]["content"]


def test_the_whole_flow_on_postgresql(postgres_server: str) -> None:
    with running_app(gallery_url=fresh_database(postgres_server)) as client:
        create(client, "pg-ada")
        face_id = enrol(client, "pg-ada", 70)["face"]["id"]
        assert client.post("/v1/subjects/pg-ada/verify", **photo_form(70)).json()["verified"]
        assert client.post("/v1/identify", **photo_form(70)).json()["subject_id"] == "pg-ada"
        assert client.delete(f"/v1/subjects/pg-ada/faces/{face_id}").status_code == 204
        assert client.delete("/v1/subjects/pg-ada").status_code == 204
        assert client.get("/v1/subjects").json()["subjects"] == []
