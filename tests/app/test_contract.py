"""The OpenAPI schema as a contract (app/openapi.py), and the content negotiation of the region-map PNG."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate
from service_testkit import make_settings

from app.errors import ERROR_CODES, ApiError
from app.main import create_app
from app.openapi import example_face_jpeg

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def schema(**settings: object) -> dict:
    # Not entered as a context manager: no model loads; the schema needs none.
    return TestClient(create_app(make_settings(**settings))).get("/openapi.json").json()


def operations(spec: dict) -> dict[str, dict]:
    return {op["operationId"]: op for methods in spec["paths"].values() for op in methods.values()}


def test_schema_is_valid_openapi_with_and_without_keys() -> None:
    validate(schema())
    validate(schema(api_keys="k1"))


def test_every_operation_has_one_request_and_one_success_content_type() -> None:
    for name, operation in operations(schema()).items():
        assert len(operation.get("requestBody", {}).get("content", {None: None})) == 1, name
        status = next(code for code in operation["responses"] if code.startswith("2"))
        success = operation["responses"][status].get("content", {})
        assert len(success) == 1 or name == "region_map_png" or status == "204", name


def test_operation_ids_are_explicit() -> None:
    assert sorted(operations(schema())) == sorted(
        ["embed", "embed_json", "verify", "verify_json", "region_map", "region_map_json", "region_map_png"]
        + ["get_model", "healthz", "readyz", "metrics"]
        + ["create_subject", "list_subjects", "get_subject", "delete_subject", "enrol_face", "delete_face"]
        + ["verify_subject", "identify"]
    )


def test_security_is_required_with_keys_and_absent_without() -> None:
    for name, operation in operations(schema()).items():
        assert "security" not in operation and "401" not in operation["responses"], name
    keyed = operations(schema(api_keys="k1"))
    for name in ("embed", "verify_json", "region_map_png", "get_model"):
        assert keyed[name]["security"] == [{"ApiKey": []}, {"Bearer": []}]  # either one
        assert "WWW-Authenticate" in keyed[name]["responses"]["401"]["headers"]
    assert "security" not in keyed["healthz"]


def test_every_operation_documents_routing_overload_and_internal_errors() -> None:
    for name, operation in operations(schema()).items():
        assert {"404", "405", "429", "431", "500"} <= set(operation["responses"]), name
        assert operation["responses"]["429"]["headers"]["Retry-After"]["required"] is True


def test_error_codes_are_an_enum_that_holds_every_api_error_code() -> None:
    enum = schema()["components"]["schemas"]["ErrorCode"]["enum"]
    assert set(enum) == set(ERROR_CODES)
    codes = {kind.code for kind in _subclasses(ApiError)}
    assert codes <= set(enum)


def _subclasses(kind: type) -> set[type]:
    found = set(kind.__subclasses__())
    return found.union(*(_subclasses(sub) for sub in found))


def test_json_examples_hold_a_valid_aligned_face() -> None:
    ops = operations(schema())
    for name in ("embed_json", "verify_json", "region_map_json"):
        example = ops[name]["requestBody"]["content"]["application/json"]["example"]
        assert example["aligned"] is True
        for field in {"image", "image1", "image2"} & set(example):
            data = base64.b64decode(example[field], validate=True)
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            assert image.shape == (112, 112, 3)
    assert example_face_jpeg().startswith(b"\xff\xd8")


@pytest.mark.data
def test_example_requests_succeed(app_factory) -> None:
    with app_factory() as client:
        for name, path in (("embed_json", "/v1/embed/json"), ("region_map_json", "/v1/region-map/json")):
            example = operations(client.get("/openapi.json").json())[name]["requestBody"]["content"]
            response = client.post(path, json=example["application/json"]["example"])
            assert response.status_code == 200, response.text


@pytest.mark.data
def test_region_map_png_negotiation(app_factory, face_a: bytes) -> None:
    files = {"image": ("a.jpg", face_a, "image/jpeg")}
    with app_factory() as client:
        png = client.post("/v1/region-map/png", files=files)
        assert png.headers["content-type"] == "image/png" and png.content.startswith(PNG_SIGNATURE)
        octets_only = {"Accept": "application/octet-stream"}
        octets = client.post("/v1/region-map/png", files=files, headers=octets_only)
        assert octets.headers["content-type"] == "application/octet-stream" and octets.content == png.content
        refused = client.post("/v1/region-map/png", files=files, headers={"Accept": "application/json"})
        assert refused.status_code == 406 and refused.json()["error"]["code"] == "not_acceptable"
        contradiction = client.post("/v1/region-map/png", files=files, data={"format": "json"})
        assert contradiction.status_code == 422
        legacy = client.post("/v1/region-map", files=files, data={"format": "png"})
        assert legacy.content == png.content
        honoured = client.post(
            "/v1/region-map", files=files, data={"format": "png"}, headers={"Accept": "application/json"}
        )
        assert honoured.headers["content-type"] == "application/json" and honoured.json()["layers"]


def test_method_not_allowed_lists_every_method_of_the_path() -> None:
    client = TestClient(create_app(make_settings()))
    assert client.request("OPTIONS", "/healthz").headers["allow"] == "GET, HEAD"
    assert client.get("/v1/embed").headers["allow"] == "POST"
