"""API keys, overload (429), body limits while streaming, and the not-ready / failed-load states."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from service_testkit import make_settings

from app.main import create_app

pytestmark = [pytest.mark.data, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

KEYS = ("first-key-0123456789", "second-key-abcdefghij")
MAX_UPLOAD_BYTES = 1024 * 1024


@pytest.fixture(scope="module")
def client(app_factory, cfp_root) -> Iterator[TestClient]:
    """Keys set; a single inference slot and no waiting line, so a second concurrent request is refused."""
    with app_factory(
        api_keys=",".join(KEYS),
        trace_network=False,
        max_concurrent=1,
        max_queue=0,
        max_upload_bytes=MAX_UPLOAD_BYTES,
    ) as client:
        yield client


def files(image: bytes) -> dict:
    return {"image": ("a.jpg", image, "image/jpeg")}


@pytest.mark.parametrize("key", KEYS)
def test_every_configured_key_is_accepted(client, face_a, key) -> None:
    response = client.post("/v1/embed", files=files(face_a), headers={"X-API-Key": key})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("headers", "message"),
    [({}, "missing"), ({"X-API-Key": "wrong"}, "invalid"), ({"X-API-Key": KEYS[0][:-1]}, "invalid")],
)
def test_missing_or_wrong_key_is_401(client, face_a, headers, message) -> None:
    for method, path in (("POST", "/v1/embed"), ("POST", "/v1/verify"), ("GET", "/v1/model")):
        response = client.request(
            method, path, files=files(face_a) if method == "POST" else None, headers=headers
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert message in response.json()["error"]["message"]


def test_two_key_headers_are_401_even_if_one_is_right(client, face_a) -> None:
    for keys in ((KEYS[0], "wrong"), ("wrong", KEYS[0]), (KEYS[0], KEYS[0])):
        headers = [("X-API-Key", key) for key in keys]
        response = client.post("/v1/embed", files=files(face_a), headers=headers)
        assert response.status_code == 401, keys
        assert response.json()["error"]["code"] == "unauthorized"
        assert "X-API-Key" in response.json()["error"]["message"]


def test_health_routes_need_no_key(client) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200


def test_chunked_body_over_the_limit_is_refused_while_reading(client) -> None:
    # Straight through ASGI, so the test sees how much of the body the app pulled before refusing it.
    chunk, chunks = b"\0" * (256 * 1024), 40  # 10 MB if read to the end; the limit is about 1.4 MB
    pulled = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": pulled < chunks}

    async def send(message: dict) -> None:
        sent.append(message)

    headers = [(b"x-api-key", KEYS[0].encode()), (b"content-type", b"application/json")]  # no content-length
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/embed",
        "raw_path": b"/v1/embed",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(client.app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "too_large"
    assert pulled < 10  # stopped reading right after the limit


def test_declared_content_length_over_the_limit_is_refused_before_reading(client) -> None:
    response = client.post(
        "/v1/embed",
        content=b"\0" * (3 * MAX_UPLOAD_BYTES),
        headers={"X-API-Key": KEYS[0], "content-type": "application/json"},
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


def test_overload_is_refused_with_429_and_retry_after(face_a) -> None:
    # Its own app: requests must run concurrently, which the in-process async client does.
    app = create_app(make_settings(max_concurrent=1, max_queue=0, trace_network=False))

    async def scenario() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                for _ in range(600):
                    if (await http.get("/readyz")).status_code == 200:
                        break
                    await asyncio.sleep(0.05)
                return list(
                    await asyncio.gather(*(http.post("/v1/embed", files=files(face_a)) for _ in range(6)))
                )

    responses = asyncio.run(scenario())
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 429}, statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "overloaded"
    assert int(refused.headers["retry-after"]) >= 1


def test_v1_routes_and_readyz_answer_503_until_the_model_is_loaded(face_a) -> None:
    client = TestClient(create_app(make_settings()))  # not entered: the lifespan never runs, nothing loads
    assert client.get("/healthz").status_code == 200
    for response in (client.get("/readyz"), client.post("/v1/embed", files=files(face_a))):
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "not_ready"


def test_a_model_that_fails_to_load_shows_on_healthz(tmp_path) -> None:
    app = create_app(make_settings(weights=str(tmp_path / "missing.safetensors")))
    with TestClient(app) as client:
        for _ in range(200):
            health = client.get("/healthz")
            if health.status_code != 200:
                break
            time.sleep(0.05)
        assert health.status_code == 503
        assert "missing.safetensors" in health.json()["error"]["message"]
        assert client.get("/readyz").status_code == 503


def test_a_bug_is_a_500_without_details(client, face_a, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(client.app.state.engine, "embed_photo", broken)
    response = client.post("/v1/embed", files=files(face_a), headers={"X-API-Key": KEYS[0]})
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal", "message": "internal server error"}}
    assert "secret" not in response.text and "Traceback" not in response.text
