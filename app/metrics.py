"""Prometheus metrics of one app instance (own registry, so several apps in one process stay apart).

With `workers > 1` every worker process has its own counters; scrape each, or run one worker per container.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import route_of

# Seconds; the service aims at tens of milliseconds per request, queues can add seconds.
CLIENT_CLOSED_REQUEST = 499
LATENCY_BUCKETS_S = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The service's collectors."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "drface_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "drface_http_request_duration_seconds",
            "Time from request start to the end of the response, in seconds.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.inference = Histogram(
            "drface_inference_duration_seconds",
            "Pipeline time per request (decode, detect, align, network), queueing excluded, in seconds.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.faces = Counter(
            "drface_faces_detected", "Faces found in uploaded images.", registry=self.registry
        )
        self.errors = Counter(
            "drface_errors", "Error responses, by error code.", ["code"], registry=self.registry
        )
        self.in_flight = Gauge(
            "drface_inferences_admitted", "Inference calls running or waiting now.", registry=self.registry
        )
        self.body_bytes_held = Gauge(
            "drface_request_body_bytes_held",
            "Request body bytes reserved by in-flight requests (bounded by DRFACE_MAX_BUFFERED_BYTES).",
            registry=self.registry,
        )
        self.ready = Gauge(
            "drface_ready", "1 once the model is loaded and warmed up.", registry=self.registry
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every collector."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware: count every HTTP request and its latency, by route template (not raw path).

    A request whose client disconnected before any answer is counted with status 499 ("client closed
    request", nginx's convention), apart from the server's own errors.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: int | None = None
        disconnected = False

        async def watching_receive() -> Message:
            nonlocal disconnected
            message = await receive()
            disconnected = disconnected or message["type"] == "http.disconnect"
            return message

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, watching_receive, send_with_status)
        finally:
            if status is None:
                status = CLIENT_CLOSED_REQUEST if disconnected else 500
            route_label = route_of(scope)
            method = scope.get("method", "")
            self.metrics.requests.labels(method=method, route=route_label, status=str(status)).inc()
            self.metrics.latency.labels(method=method, route=route_label).observe(time.perf_counter() - start)
