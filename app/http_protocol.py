"""uvicorn's h11 HTTP/1.1 protocol plus the connection limits it lacks: `drface serve` runs this class.

uvicorn and h11 provide the keep-alive timeout and a header size limit (h11's `max_incomplete_event_size`,
set from `DRFACE_MAX_HEADER_BYTES`), which h11 applies only to a header block still incomplete. This
subclass adds what they do not:

* the header size limit also for a header block that arrives whole in one read;
* a header read timeout: a connection must deliver a request's line and headers within
  `DRFACE_HEADER_TIMEOUT_S` of its start (or of the end of its previous response), else 408;
* a cap on open connections per process (`DRFACE_MAX_CONNECTIONS`): one beyond it gets 429 at once;
* every answer the protocol gives itself (400, 408, 429, 431) in the service's JSON error shape, with 431
  (not 400) for an over-long header block.

After such an answer the connection is half-closed and whatever the client still sends is read and dropped
for up to `_LINGER_S` seconds, so that closing does not reset the connection before the client has read the
answer. Body limits (size, read time, bytes buffered) are ASGI middleware: see `app.body_limit`.
"""

from __future__ import annotations

import asyncio
import logging
from functools import lru_cache
from http import HTTPStatus
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from app.errors import error_body
from app.settings import Settings

logger = logging.getLogger("drface.app")

_LINGER_S = 2.0


@lru_cache(maxsize=1)
def server_settings() -> Settings:
    """The `DRFACE_*` settings of this server process (the app reads the same environment)."""
    return Settings()


def raw_error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 error response in the service's JSON shape, ending the connection."""
    body = error_body(code, message)
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class GuardedH11Protocol(H11Protocol):
    """One HTTP/1.1 connection: uvicorn's h11 protocol with a header timeout and a connection cap."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.settings = server_settings()
        self._header_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._rejected = False

    # -- asyncio.Protocol --------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limit = self.settings.max_connections
        if len(self.connections) > limit:
            logger.info("refused a connection: %d open, the limit is %d", len(self.connections) - 1, limit)
            message = f"the server has {limit} open connections, its limit; retry shortly"
            self._reject(429, "overloaded", message, {"retry-after": str(self.settings.retry_after_s)})
            return
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._rejected:  # answered already: drop what the client still sends until the connection ends
            return
        if self.conn.their_state is h11.IDLE and self._header_block_too_long(data):
            limit = self.settings.max_header_bytes
            logger.info("refused a request: headers longer than %d bytes", limit)
            self._reject(431, "headers_too_large", f"request line and headers exceed {limit} bytes")
            return
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    # -- uvicorn hooks ------------------------------------------------------------------------------------
    def handle_events(self) -> None:
        super().handle_events()
        if self._header_timer is not None and self.conn.their_state is not h11.IDLE:
            self._header_timer.cancel()  # the request's headers are in
            self._header_timer = None

    def on_response_complete(self) -> None:
        # The next request's headers are due within the timeout too (h11 is IDLE again once both sides are
        # DONE; the keep-alive timeout closes an idle connection sooner).
        if not self.transport.is_closing() and self.conn.their_state in (h11.DONE, h11.IDLE):
            self._arm_header_timer()
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn calls this when h11 cannot parse a request: 431 for an over-long header block, else 400."""
        pending, _ = self.conn.trailing_data
        limit = self.settings.max_header_bytes
        if len(pending) > limit:
            self._reject(431, "headers_too_large", f"request line and headers exceed {limit} bytes")
        else:
            self._reject(400, "invalid_request", "malformed HTTP request")

    # -- helpers --------------------------------------------------------------------------------------------
    def _header_block_too_long(self, data: bytes) -> bool:
        """Whether the request being received has more than `max_header_bytes` before its blank line.

        h11 enforces its limit only while a header block is incomplete: one that arrives whole in a single
        read (64 KiB and more do, on loopback) would pass. So the block is measured here, before h11.
        """
        limit = self.settings.max_header_bytes
        pending, _ = self.conn.trailing_data  # at most `limit` bytes, else h11 would have refused them
        buffered = pending + data
        end = buffered.find(b"\r\n\r\n", 0, limit + 4)
        return end == -1 and len(buffered) > limit

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.settings.header_timeout_s, self._header_timeout)

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        pending, _ = self.conn.trailing_data
        if not pending:  # nothing of a request arrived: close quietly, like the keep-alive timeout
            self.transport.close()
            return
        timeout = self.settings.header_timeout_s
        logger.info("closed a connection: request headers not received within %g s", timeout)
        self._reject(408, "request_timeout", f"request headers not received within {timeout:g} s")

    def _reject(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        """Send an error outside any request cycle, half-close, then close after a short linger."""
        self._rejected = True
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # A request is being served (h11 failed on its body): its app sees a disconnect from now on and
            # its answer goes nowhere; ours is sent instead, unless its own has begun.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self.transport.close()
                return
        self.transport.write(raw_error_response(status, code, message, headers))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger_timer = self.loop.call_later(_LINGER_S, self.transport.close)

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._linger_timer = None
