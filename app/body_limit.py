"""Bounds on request bodies, enforced while a body is read (a Content-Length header is not trusted alone).

* Size: a declared Content-Length over the route's limit is refused (413) before reading anything; otherwise
  bytes are counted as they arrive and reading stops with 413 as soon as the count passes the limit (also for
  chunked uploads).
* Time: the whole body must arrive within `body_timeout_s` of the request reaching the app (408), so a client
  sending a byte a second cannot hold a connection.
* Memory: the body bytes held by all in-flight requests of the process stay within one `ByteBudget`
  (`DRFACE_MAX_BUFFERED_BYTES`). A request reserves its bytes as they arrive and keeps them until it is
  answered; one whose next bytes do not fit gets 429 with Retry-After, and one whose declared length does not
  fit in what is left gets it before anything is read. Counting what arrived, not what was declared, keeps
  clients that declare a large body and then stall from holding the budget. The inference queue bounds the
  work, this bounds the bytes waiting for it.

A response sent before the body was read to its end carries `Connection: close`, so uvicorn closes the
connection instead of reading and discarding the rest of the body.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import OverloadedError, RequestTimeoutError, TooLargeError, error_response


class BodyTooLargeError(StarletteHTTPException):
    """Raised from `receive` when the body passes the limit; the error handlers turn it into a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes", headers={"Connection": "close"})


class ByteBudget:
    """Bytes that in-flight request bodies may hold together. Used from the event loop only (no lock)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0

    def fits(self, size: int) -> bool:
        """Whether `size` more bytes would fit now."""
        return self.used + size <= self.capacity

    def try_reserve(self, size: int) -> bool:
        """Take `size` bytes if they fit; False (nothing taken) otherwise."""
        if not self.fits(size):
            return False
        self.used += size
        return True

    def release(self, size: int) -> None:
        self.used -= size


class BodyLimitMiddleware:
    """ASGI middleware: per request at most `limit_for_path(path)` body bytes, read within `timeout_s`,
    and within the shared `budget`."""

    def __init__(
        self,
        app: ASGIApp,
        limit_for_path: Callable[[str], int],
        timeout_s: float,
        budget: ByteBudget,
        retry_after_s: int,
    ) -> None:
        self.app = app
        self.limit_for_path = limit_for_path
        self.timeout_s = timeout_s
        self.budget = budget
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for_path(scope["path"])
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        # Without either header HTTP/1.1 has no body: an answer needs no close then, even if nobody read.
        has_body = "transfer-encoding" in headers or declared not in ("", "0")
        body_done = False
        if declared.isdigit() and int(declared) > limit:
            message = f"request body is {declared} bytes, the limit is {limit} bytes"
            await self._refuse(scope, receive, send, TooLargeError(message))
            return
        if declared.isdigit() and not self.budget.fits(int(declared)):
            await self._refuse(scope, receive, send, self._over_budget())
            return
        received = reserved = 0
        deadline = asyncio.get_running_loop().time() + self.timeout_s

        async def guarded_receive() -> Message:
            nonlocal received, reserved, body_done
            if body_done:
                return await receive()
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), max(remaining, 0.0))
            except asyncio.TimeoutError:
                raise RequestTimeoutError(f"request body not received within {self.timeout_s:g} s") from None
            if message["type"] != "http.request":
                return message
            received += len(message.get("body", b""))
            body_done = not message.get("more_body", False)
            if received > limit:
                raise BodyTooLargeError(limit)
            if not self.budget.try_reserve(received - reserved):
                raise self._over_budget()
            reserved = received
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and has_body and not body_done:
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"connection" for name, _ in headers):
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, guarded_receive, closing_send)
        finally:
            self.budget.release(reserved)

    def _over_budget(self) -> OverloadedError:
        return OverloadedError(
            "the server is holding as many uploads as it may; retry shortly", self.retry_after_s
        )

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, error: TooLargeError | OverloadedError
    ) -> None:
        """Answer without reading the body, and close the connection."""
        headers = {**error.headers, "Connection": "close"}
        response = error_response(Request(scope), error.status_code, error.code, error.message, headers)
        await response(scope, receive, send)
