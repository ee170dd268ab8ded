"""/docs and /redoc work offline: every asset they load is served by the app itself."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from service_testkit import make_settings

from app.main import create_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# src="..." / href="..." attributes, and url: '...' / spec-url="..." style references in the inline scripts.
_REFERENCES = re.compile(r"""(?:src|href|url|spec-url)\s*[=:]\s*["']([^"']+)["']""")


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # Not entered as a context manager: the lifespan does not run, no model loads; docs need none.
    yield TestClient(create_app(make_settings()))


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_page_refers_to_no_other_host(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    html = response.text
    assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.IGNORECASE), html
    references = _REFERENCES.findall(html)
    assert len(references) >= 2, html  # the script, the spec, (the stylesheet, the icon)
    for reference in references:
        assert reference.startswith("/"), reference
        asset = client.get(reference)
        assert asset.status_code == 200, reference
        assert len(asset.content) > 0


def test_swagger_ui_and_redoc_scripts_are_the_real_bundles(client: TestClient) -> None:
    swagger = client.get("/docs").text
    redoc = client.get("/redoc").text
    swagger_js = next(r for r in _REFERENCES.findall(swagger) if r.endswith(".js"))
    redoc_js = next(r for r in _REFERENCES.findall(redoc) if r.endswith(".js"))
    assert "SwaggerUIBundle" in client.get(swagger_js).text
    assert "Redoc" in client.get(redoc_js).text
