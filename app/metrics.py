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

# Seconds; the service aims at tens of milliseconds per request, queues can add seconds.
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
        self.ready = Gauge(
            "drface_ready", "1 once the model is loaded and warmed up.", registry=self.registry
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every collector."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware: count every HTTP request and its latency, by route template (not raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            route_label = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method=method, route=route_label, status=str(status)).inc()
            self.metrics.latency.labels(method=method, route=route_label).observe(time.perf_counter() - start)
