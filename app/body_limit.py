"""Request body size limit, enforced while the body is read (a Content-Length header is not trusted alone).

A declared Content-Length over the limit is refused before reading anything; otherwise the bytes are counted
as they arrive and reading stops with 413 as soon as the count passes the limit (also for chunked uploads).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import TooLargeError, error_response


class BodyTooLargeError(StarletteHTTPException):
    """Raised from `receive` when the body passes the limit; the error handlers turn it into a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")


class BodyLimitMiddleware:
    """ASGI middleware: at most `limit_for_path(path)` body bytes per HTTP request."""

    def __init__(self, app: ASGIApp, limit_for_path: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for_path = limit_for_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for_path(scope["path"])
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            message = f"request body is {declared} bytes, the limit is {limit} bytes"
            response = error_response(Request(scope), 413, TooLargeError.code, message)
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        await self.app(scope, counting_receive, send)
