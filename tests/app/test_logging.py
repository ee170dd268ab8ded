"""What a real uvicorn server logs for a bug: one entry with the traceback, and a plain 500 to the client."""

from __future__ import annotations

import logging

import httpx
import pytest
from service_testkit import make_settings, threaded_server

from app.main import create_app

pytestmark = [pytest.mark.data, pytest.mark.slow]


def test_a_bug_is_logged_once_and_answered_with_a_plain_500(
    face_a: bytes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings(trace_network=False))
    with threaded_server(app) as url:

        def broken(*_: object) -> None:
            raise RuntimeError("secret internal detail")

        monkeypatch.setattr(app.state.engine, "embed_photo", broken)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            response = httpx.post(f"{url}/v1/embed", files={"image": ("a.jpg", face_a, "image/jpeg")})
        assert response.status_code == 500
        assert response.json() == {"error": {"code": "internal", "message": "internal server error"}}
        assert "secret" not in response.text
        with_traceback = [record for record in caplog.records if record.exc_info]
        assert len(with_traceback) == 1, [record.getMessage() for record in with_traceback]
        assert "secret internal detail" in caplog.text  # the operator sees it, once
