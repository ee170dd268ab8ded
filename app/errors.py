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
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail) if exc.detail else HTTPStatus(exc.status_code).phrase
        return error_response(request, exc.status_code, code, message, dict(exc.headers or {}))


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
