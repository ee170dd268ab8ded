"""Operational routes, never behind an API key: `/healthz`, `/readyz` (also answer HEAD) and `/metrics`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response

from app.dependencies import ReadyEngine
from app.engine import Engine
from app.errors import NotReadyError
from app.openapi import error_responses
from app.routes.convert import model_label
from app.schemas import HealthStatus

router = APIRouter(tags=["operations"])

RouteFunction = TypeVar("RouteFunction", bound=Callable[..., Any])


def probe(path: str, summary: str, **documentation: Any) -> Callable[[RouteFunction], RouteFunction]:
    """Register a route for GET (documented) and HEAD (load balancers probe with it, left out of /docs)."""

    def register(function: RouteFunction) -> RouteFunction:
        router.head(path, include_in_schema=False)(function)
        return router.get(path, operation_id=function.__name__, summary=summary, **documentation)(function)

    return register


@probe("/healthz", "Process is up", response_model=HealthStatus, responses=error_responses(503))
async def healthz(request: Request) -> HealthStatus:
    """200 while the process serves requests (also during model loading); 503 if the model failed to load."""
    load_error: str | None = request.app.state.load_error
    if load_error is not None:
        raise NotReadyError(f"model failed to load: {load_error}")
    engine: Engine | None = request.app.state.engine
    return HealthStatus(status="ok", model=None if engine is None else model_label(engine))


@probe("/readyz", "Model loaded and warmed up", response_model=HealthStatus, responses=error_responses(503))
async def readyz(engine: ReadyEngine) -> HealthStatus:
    """200 once the model is loaded and a warm-up inference has run; 503 `not_ready` before."""
    return HealthStatus(status="ready", model=model_label(engine))


@probe(
    "/metrics",
    "Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text."}
    },
)
async def metrics(request: Request) -> Response:
    """Request counts and latency by route and status, pipeline time, faces detected, errors by code."""
    collectors = request.app.state.metrics
    return Response(content=collectors.render(), media_type=collectors.content_type)
