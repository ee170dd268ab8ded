"""The FastAPI application: `create_app(settings)`, and `app` for `uvicorn app.main:app`.

Nothing heavy happens at import. The lifespan starts the inference thread pool and loads the model in the
background, so `/healthz` answers at once and `/readyz` turns 200 after the warm-up inference.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app.body_limit import BodyLimitMiddleware, ByteBudget
from app.engine import Engine, InferenceGate
from app.errors import ErrorGuardMiddleware, install_error_handlers
from app.gallery.routes import gallery_router
from app.gallery.service import Gallery, served_model
from app.metrics import Metrics, MetricsMiddleware
from app.openapi import install_openapi
from app.routes import faces, model_info, operations
from app.settings import Settings
from app.web import install_web_page
from model import fused

logger = logging.getLogger("drface.app")

DESCRIPTION = """
Face embeddings, verification and DRConv region maps from a DRConv-MobileFaceNet.

* Send photos as **multipart file uploads** (`image`, or `image1` + `image2`) to `/v1/embed`, `/v1/verify`,
  `/v1/region-map` and `/v1/region-map/png`, or as **JSON with base64 strings** (same field names) to
  `/v1/embed/json`, `/v1/verify/json` and `/v1/region-map/json`. Options go in the same form / JSON object.
  (The multipart paths also read a JSON body, for older clients.)
* "The" face of a photo is the one with the **largest box**; every list of faces is ordered largest first.
* Errors always look like `{"error": {"code": "...", "message": "..."}}`.
* When the server has API keys (`DRFACE_API_KEYS`), every `/v1` route needs the `X-API-Key` header; this
  schema then declares it.
* Generate a client from this schema: `openapi-python-client generate --url .../openapi.json` (docs/api.md).
"""


async def _load_model(app: FastAPI) -> None:
    """Load the model, warm it up on the inference threads, then publish it (which makes /readyz ready)."""
    settings: Settings = app.state.settings
    try:
        engine = await asyncio.to_thread(Engine.load, settings, lambda: app.state.gate.admitted)
        await asyncio.to_thread(app.state.gallery.load_index, served_model(engine), engine.card.embedding_dim)
        warm_ms = await app.state.gate.run(engine.warm_up, settings.warmup_runs)
    except Exception as exc:  # any failure must show on /healthz, not kill the event loop silently
        logger.exception("model failed to load")
        app.state.load_error = f"{type(exc).__name__}: {exc}"
        return
    app.state.engine = engine
    app.state.metrics.ready.set(1)
    logger.info(
        "model %s@%s ready (warm-up pass %.1f ms, %d torch threads, DRConv fused CPU operator %s)",
        engine.card.name,
        engine.card.version,
        warm_ms,
        settings.thread_count(),
        "on" if fused.available() else "off: PyTorch path (build it with `python -m model.fused`)",
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    app.state.gallery = await asyncio.to_thread(Gallery.open, settings)  # migrates the schema
    gate = InferenceGate(
        settings.concurrent_inferences(),
        settings.max_queue,
        settings.retry_after_s,
        settings.thread_count(),
    )
    app.state.gate = gate
    app.state.metrics.in_flight.set_function(lambda: gate.admitted)
    loader = asyncio.create_task(_load_model(app))
    try:
        yield
    finally:
        loader.cancel()
        gate.shutdown()
        if app.state.engine is not None:
            app.state.engine.close()
        app.state.gallery.close()
        app.state.engine = None
        app.state.metrics.ready.set(0)


def request_body_limit(settings: Settings, path: str) -> int:
    """Body bytes allowed on `path`: room for two images on /v1/verify, one elsewhere."""
    return settings.max_request_bytes(2 if path.rstrip("/") in ("/v1/verify", "/v1/verify/json") else 1)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app; `settings` defaults to the `DRFACE_*` environment. The model loads when the app starts."""
    settings = settings or Settings()
    logging.getLogger("drface").setLevel(settings.log_level.upper())
    # /docs and /redoc load Swagger UI and ReDoc from the fastapi-offline package, served by this app: they
    # work without internet, and no third-party script runs on the page where an API key is typed.
    app = FastAPIOffline(
        title="drface",
        version="0.1.0",
        summary="Face verification you train and serve yourself.",
        description=DESCRIPTION,
        lifespan=lifespan,
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.engine = None
    app.state.gate = None
    app.state.load_error = None
    app.state.gallery = None
    install_error_handlers(app)
    # The last middleware added runs first: metrics see every request, including refused bodies, dropped
    # clients (499) and bugs (500, logged once by the error guard).
    budget = ByteBudget(settings.max_buffered_bytes)
    app.state.metrics.body_bytes_held.set_function(lambda: budget.used)
    app.add_middleware(
        BodyLimitMiddleware,
        limit_for_path=partial(request_body_limit, settings),
        timeout_s=settings.body_timeout_s,
        budget=budget,
        retry_after_s=settings.retry_after_s,
    )
    app.add_middleware(ErrorGuardMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    for router in (faces.router, model_info.router, gallery_router, operations.router):
        app.include_router(router)
    install_web_page(app)
    install_openapi(app, settings)
    return app


app = create_app()
