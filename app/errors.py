"""Typed service errors and the one place that turns any error into `{"error": {"code", "message"}}`.

`install_error_handlers` shapes the errors FastAPI routes raise; `ErrorGuardMiddleware` catches what is left:
a client that went away (no answer, one log line, status 499 in the metrics) and bugs (one log entry with the
traceback, a 500 without details).
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model import pipeline
from model.decode import ImageError, ImageTooLargeError, UnsupportedImageError
from model.validation import error_lines

logger = logging.getLogger("drface.app")


class ApiError(Exception):
    """An error the client caused or must react to; `status_code` and `code` are part of the API."""

    status_code = 500
    code = "internal"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class NoFaceError(ApiError):
    status_code, code = 400, "no_face"


class BadImageError(ApiError):
    status_code, code = 400, "bad_image"


class TooManyFacesError(ApiError):
    status_code, code = 400, "too_many_faces"


class UnauthorizedError(ApiError):
    status_code, code = 401, "unauthorized"


class TooLargeError(ApiError):
    status_code, code = 413, "too_large"


class UnsupportedMediaTypeError(ApiError):
    status_code, code = 415, "unsupported_media_type"


class InvalidRequestError(ApiError):
    status_code, code = 422, "invalid_request"


class OverloadedError(ApiError):
    status_code, code = 429, "overloaded"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class RequestTimeoutError(ApiError):
    """The client sent its body too slowly; the connection is closed after the answer."""

    status_code, code = 408, "request_timeout"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})


class NotAcceptableError(ApiError):
    status_code, code = 406, "not_acceptable"


class NotReadyError(ApiError):
    status_code, code = 503, "not_ready"


# Errors of the image decoder (model.decode) and the face pipeline (model.pipeline) -> the API error they
# mean, and the message template ({} is the error's own message). The first matching class wins.
_DOMAIN_ERRORS: tuple[tuple[type[Exception], type[ApiError], str], ...] = (
    (ImageTooLargeError, TooLargeError, "{}"),
    (UnsupportedImageError, UnsupportedMediaTypeError, "{}"),
    (ImageError, BadImageError, "{}"),
    (pipeline.NoFaceError, NoFaceError, "{}"),
    (
        pipeline.TooManyFacesError,
        TooManyFacesError,
        "{}; crop the photo or use /v1/verify (which uses the largest face)",
    ),
    (
        pipeline.NotAlignedError,
        InvalidRequestError,
        "aligned=true {}; send the photo with aligned=false to detect and align the face",
    ),
    (pipeline.FaceError, InvalidRequestError, "{}"),
)

# Status codes Starlette/FastAPI raise themselves (routing, body limits) -> our error code.
_HTTP_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
_OTHER_HTTP_CODE = "http_error"  # any other status the framework raises
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

# Every `code` an error response may carry (the schema's ErrorCode enum): the ApiError types', the
# framework's above, the HTTP layer's (app.http_protocol: headers_too_large) and the last-resort `internal`.
ERROR_CODES: tuple[str, ...] = (
    "bad_image",
    "no_face",
    "too_many_faces",
    "invalid_request",
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "conflict",
    "no_enrolled_face",
    "model_mismatch",
    "not_acceptable",
    "request_timeout",
    "too_large",
    "unsupported_media_type",
    "overloaded",
    "headers_too_large",
    "internal",
    "not_ready",
    _OTHER_HTTP_CODE,
)


def domain_error_to_api(error: ImageError | pipeline.FaceError) -> ApiError:
    """The API error for a decoder or pipeline error, with its message."""
    for domain_type, api_type, template in _DOMAIN_ERRORS:
        if isinstance(error, domain_type):
            return api_type(template.format(error))
    return BadImageError(str(error))


def route_of(scope: Scope) -> str:
    """The matched route's template (never the raw, client-chosen path), or "unmatched"."""
    return getattr(scope.get("route"), "path", None) or "unmatched"


def error_body(code: str, message: str) -> bytes:
    """The JSON bytes of the one error shape."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def error_response(
    request: Request, status_code: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one error shape; also counts the error in the metrics."""
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(code=code).inc()
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status_code, headers=headers
    )


def _validation_message(exc: RequestValidationError) -> str:
    return "; ".join(error_lines(exc.errors()[:5], drop=("body",))) or "invalid request"


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app takes on the request's path (a GET route and its HEAD twin)."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Register handlers so that every error, ours or the framework's, has the same JSON shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status_code, exc.code, exc.message, exc.headers)

    async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
        api = domain_error_to_api(exc)  # type: ignore[arg-type]
        return error_response(request, api.status_code, api.code, api.message)

    app.add_exception_handler(ImageError, _domain_error)
    app.add_exception_handler(pipeline.FaceError, _domain_error)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, 422, InvalidRequestError.code, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, _OTHER_HTTP_CODE)
        message = str(exc.detail) if exc.detail else HTTPStatus(exc.status_code).phrase
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette lists the first matching route's methods; the path has more
            headers["Allow"] = ", ".join(allowed_methods(request))
        return error_response(request, exc.status_code, code, message, headers)


class ErrorGuardMiddleware:
    """ASGI middleware for what the handlers leave: dropped clients and bugs.

    Starlette's own last-resort handler re-raises after answering, so uvicorn would log every bug a second
    time; catching here logs it once. A client that disconnects mid-request is not a server error: one short
    line, no answer (nobody is there to read it), no traceback.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            logger.info(
                "client disconnected before the request was read: %s %s", scope["method"], route_of(scope)
            )
        except Exception:
            logger.exception("unhandled error on %s %s", scope["method"], route_of(scope))
            if not started:
                response = error_response(Request(scope), 500, "internal", "internal server error")
                await response(scope, receive, send)
