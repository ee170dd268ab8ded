"""The OpenAPI schema as a contract that generated clients and schema-driven fuzzers can use.

Rules the schema keeps (tests/app/test_generated_client.py and tests/app/test_schemathesis.py check them):
- One request content type and one success content type per operation: `/v1/embed` takes multipart,
  `/v1/embed/json` takes base64 JSON, `/v1/region-map/png` answers image/png. (The multipart paths still read
  JSON bodies too, for the README's curl examples; the schema names each body once.)
- Named models for every body (`EmbedForm`, `EmbedRequest`, ...), explicit operationIds.
- JSON examples that work: a 112x112 face drawn in the aligned pose at schema-build time, sent with
  `aligned=true` (no photo of a real person in the repository).
- Security as the server has it: `X-API-Key` required on `/v1` when DRFACE_API_KEYS is set, absent otherwise.
- Every error status an operation can answer, with its `code` values and its headers (`Retry-After`,
  `WWW-Authenticate`), including what any route can get: 404, 405, 429, 431 and 500.
"""

from __future__ import annotations

import base64
from functools import cache
from typing import Any

import cv2
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.gallery.schemas import EnrolForm, IdentifyForm, ProbeForm
from app.inputs import PNG_MEDIA_TYPES
from app.schemas import (
    EmbedForm,
    EmbedRequest,
    ErrorResponse,
    RegionMapForm,
    RegionMapRequest,
    VerifyForm,
    VerifyRequest,
)
from app.settings import Settings
from model.align import ARCFACE_TEMPLATE_112

API_KEY_SCHEME = "ApiKey"
BEARER_SCHEME = "Bearer"
_REF = "#/components/schemas/{model}"
_BODY_MODELS: tuple[type[BaseModel], ...] = (
    EmbedForm,
    EmbedRequest,
    VerifyForm,
    VerifyRequest,
    RegionMapForm,
    RegionMapRequest,
    EnrolForm,
    ProbeForm,
    IdentifyForm,
)
_RETRY_AFTER = {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}

# status -> (the `code` values it carries and when, response headers). One table for the whole schema.
_ERRORS: dict[int, tuple[str, dict[str, Any]]] = {
    400: (
        "`bad_image`: the file is empty, truncated or corrupt; `no_face`: no face found; `too_many_faces`: "
        "more than DRFACE_MAX_FACES faces; `invalid_request`: a malformed HTTP request.",
        {},
    ),
    401: (
        "`unauthorized`: the key (X-API-Key, or Authorization: Bearer) is missing or wrong, or X-API-Key "
        "was sent more than once.",
        {
            "WWW-Authenticate": {
                "description": "`ApiKey, Bearer`.",
                "required": True,
                "schema": {"type": "string"},
            }
        },
    ),
    404: ("`not_found`: no such route (check the base URL), or no such subject or face.", {}),
    405: ("`method_not_allowed`: the route does not take this method.", {}),
    406: ("`not_acceptable`: the Accept header rules out what the route answers.", {}),
    409: (
        "`conflict`: the subject id is taken; `no_enrolled_face`: the subject has no face to compare with; "
        "`model_mismatch`: the subject's faces were made by another model (re-enrol, or `drface gallery "
        "reembed`).",
        {},
    ),
    408: ("`request_timeout`: the request was sent too slowly; the connection is closed.", {}),
    413: (
        "`too_large`: the body, a file or a base64 string is over the byte limit, or the image has more "
        "pixels than DRFACE_MAX_PIXELS.",
        {},
    ),
    415: (
        "`unsupported_media_type`: a body neither multipart nor JSON, or a file that is not a supported "
        "image.",
        {},
    ),
    422: ("`invalid_request`: a missing, unknown or invalid field; the message names it.", {}),
    429: (
        "`overloaded`: too many requests in flight; retry after `Retry-After`.",
        {"Retry-After": {**_RETRY_AFTER, "required": True}},
    ),
    431: ("`headers_too_large`: the request line and headers are over DRFACE_MAX_HEADER_BYTES.", {}),
    500: ("`internal`: a bug; the server log has the details.", {}),
    503: (
        "`not_ready`: the model is still loading (with `Retry-After`) or failed to load (see /healthz).",
        {"Retry-After": {**_RETRY_AFTER, "required": False}},
    ),
}
PNG_RESPONSE = {
    "description": "The aligned face, one panel per DRConv layer with its regions, a legend: image/png, or "
    "the same bytes as application/octet-stream when `Accept` asks for that (what generated clients read).",
    "content": {kind: {"schema": {"type": "string", "format": "binary"}} for kind in PNG_MEDIA_TYPES},
}
# What any operation may answer, whatever its body: routing, the HTTP layer and bugs.
_EVERY_OPERATION = (404, 405, 429, 431, 500)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route decorator: the error shape for each status, its codes and its headers."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description, headers = _ERRORS[status]
        body = {"schema": {"$ref": _REF.format(model=ErrorResponse.__name__)}}
        responses[status] = {"description": description, "content": {"application/json": body}}
        if headers:
            responses[status]["headers"] = headers
    return responses


def multipart_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra=` of a route that reads `model` as multipart/form-data (the route parses it itself)."""
    return _body("multipart/form-data", model)


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra=` of a route that reads `model` as JSON (the route parses it itself)."""
    return _body("application/json", model)


def _body(media_type: str, model: type[BaseModel]) -> dict[str, Any]:
    assert model in _BODY_MODELS, model  # its schema is added to the components below
    schema = {"$ref": _REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}}}


@cache
def example_face_jpeg() -> bytes:
    """A 112x112 JPEG of a face drawn in the aligned pose (eyes, nose and mouth on the ArcFace template):
    what `aligned=true` takes. Drawn, not photographed: no real person."""
    image = np.full((112, 112, 3), (200, 190, 175), np.uint8)  # BGR
    skin, dark = (150, 180, 225), (60, 60, 90)
    cv2.ellipse(image, (56, 62), (40, 54), 0, 0, 360, skin, -1)
    cv2.ellipse(image, (56, 22), (42, 20), 0, 180, 360, (40, 50, 70), -1)  # hair
    points = [(int(x), int(y)) for x, y in ARCFACE_TEMPLATE_112]
    left_eye, right_eye, nose, mouth_left, mouth_right = points
    for eye in (left_eye, right_eye):
        cv2.ellipse(image, eye, (8, 4), 0, 0, 360, (245, 245, 245), -1)
        cv2.circle(image, eye, 3, (90, 60, 30), -1)
    cv2.line(image, (nose[0], nose[1] - 12), nose, dark, 2)
    cv2.ellipse(image, ((mouth_left[0] + mouth_right[0]) // 2, mouth_left[1]), (14, 4), 0, 0, 180, dark, 2)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    return encoded.tobytes()


def _json_examples() -> dict[str, dict[str, Any]]:
    """A request that succeeds, per JSON body model: the drawn face, sent as an aligned crop."""
    face = base64.b64encode(example_face_jpeg()).decode("ascii")
    return {
        EmbedRequest.__name__: {"image": face, "aligned": True},
        VerifyRequest.__name__: {"image1": face, "image2": face, "aligned": True},
        RegionMapRequest.__name__: {"image": face, "aligned": True},
    }


def finish_schema(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """FastAPI's schema -> the contract: body models, examples, security as configured, every error status."""
    components = schema.setdefault("components", {})
    models = [(model, "validation") for model in (*_BODY_MODELS, ErrorResponse)]
    _, definitions = models_json_schema(models, ref_template=_REF)
    for name, definition in definitions.get("$defs", {}).items():
        components.setdefault("schemas", {}).setdefault(name, definition)
    examples = _json_examples()
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for media in operation.get("requestBody", {}).get("content", {}).values():
                name = media.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
                if name in examples:
                    media["example"] = examples[name]
            if "security" in operation and not settings.api_keys:
                del operation["security"]  # no keys: nothing to send, and a generated client needs no auth
                operation["responses"].pop("401", None)
            for status, response in error_responses(*_EVERY_OPERATION).items():
                operation["responses"].setdefault(str(status), response)
    return schema


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Make `app.openapi()` (and `/openapi.json`) return the finished contract, built once."""
    build = app.openapi
    finished = False

    def openapi() -> dict[str, Any]:
        nonlocal finished
        schema = build()
        if not finished:
            finish_schema(schema, settings)
            finished = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
