"""Operational routes, never behind an API key: `/healthz`, `/readyz` (also answer HEAD) and `/metrics`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.dependencies import require_engine
from app.engine import Engine
from app.errors import NotReadyError
from app.routes.convert import model_label
from app.routes.openapi import error_responses
from app.schemas import HealthStatus

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    response_model=HealthStatus,
    summary="Process is up",
    responses=error_responses(503),
)
@router.head("/healthz", include_in_schema=False)  # load balancers probe with HEAD
async def healthz(request: Request) -> HealthStatus:
    """200 while the process serves requests (also during model loading); 503 if the model failed to load."""
    load_error: str | None = request.app.state.load_error
    if load_error is not None:
        raise NotReadyError(f"model failed to load: {load_error}")
    engine: Engine | None = request.app.state.engine
    return HealthStatus(status="ok", model=None if engine is None else model_label(engine))


@router.get(
    "/readyz",
    response_model=HealthStatus,
    summary="Model loaded and warmed up",
    responses=error_responses(503),
)
@router.head("/readyz", include_in_schema=False)  # load balancers probe with HEAD
async def readyz(request: Request) -> HealthStatus:
    """200 once the model is loaded and a warm-up inference has run; 503 `not_ready` before."""
    engine = require_engine(request)
    return HealthStatus(status="ready", model=model_label(engine))


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
@router.head("/metrics", include_in_schema=False)  # load balancers probe with HEAD
async def metrics(request: Request) -> Response:
    """Request counts and latency by route and status, pipeline time, faces detected, errors by code."""
    collectors = request.app.state.metrics
    return Response(content=collectors.render(), media_type=collectors.content_type)
