"""HTTP routes: `/v1/*` (API key when configured, model must be ready) and the open operational routes."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import APIKeyHeader

from app.engine import Engine, Face, LayerMask
from app.errors import NotReadyError, UnauthorizedError
from app.inputs import png_media_type, read_request
from app.openapi import API_KEY_SCHEME, PNG_RESPONSE, error_responses, json_body, multipart_body
from app.region_png import region_colors_hex, render_region_png
from app.schemas import (
    EmbedForm,
    EmbedOptions,
    EmbedRequest,
    EmbedResponse,
    FaceOut,
    HealthStatus,
    ModelInfo,
    RegionLayer,
    RegionMapForm,
    RegionMapOptions,
    RegionMapRequest,
    RegionMapResponse,
    VerifyForm,
    VerifyOptions,
    VerifyRequest,
    VerifyResponse,
)
from app.settings import Settings
from app.thresholds import resolve_threshold
from model.align import ARCFACE_TEMPLATE_112

T = TypeVar("T")

_COORDINATE_DECIMALS = 2

_api_key_header = APIKeyHeader(
    name="X-API-Key",
    scheme_name=API_KEY_SCHEME,
    auto_error=False,
    description="Required when the server sets DRFACE_API_KEYS.",
)


class PNGResponse(Response):
    media_type = "image/png"


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return error_responses(*statuses)


# -- dependencies ---------------------------------------------------------------------------------------
def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def require_api_key(request: Request, api_key: str | None = Depends(_api_key_header)) -> None:
    """401 unless the server has no keys or the one `X-API-Key` header equals one of them (constant time)."""
    keys: tuple[str, ...] = request.app.state.settings.api_keys
    if not keys:
        return
    if len(request.headers.getlist("x-api-key")) > 1:  # which one would count is a guess: refuse
        raise UnauthorizedError(
            "send one X-API-Key header, not several", headers={"WWW-Authenticate": "ApiKey"}
        )
    given = (api_key or "").encode()
    valid = False
    for key in keys:  # compare with every key, so timing does not tell which one nearly matched
        valid |= hmac.compare_digest(given, key.encode())
    if not valid:
        message = "invalid API key" if api_key else "missing X-API-Key header"
        raise UnauthorizedError(message, headers={"WWW-Authenticate": "ApiKey"})


def require_engine(request: Request) -> Engine:
    """The loaded engine; 503 not_ready while the model is still loading or warming up."""
    engine: Engine | None = request.app.state.engine
    if engine is None:
        raise NotReadyError("the model is still loading; retry shortly", headers={"Retry-After": "1"})
    return engine


ReadyEngine = Annotated[Engine, Depends(require_engine)]


# -- conversions ------------------------------------------------------------------------------------------
def model_label(engine: Engine) -> str:
    return f"{engine.card.name}@{engine.card.version}"


def layer_out(layer: LayerMask) -> RegionLayer:
    height, width = layer.mask.shape
    return RegionLayer(
        name=layer.name, regions=layer.regions, height=height, width=width, mask=layer.mask.tolist()
    )


def face_out(face: Face, layers: list[LayerMask] | None = None) -> FaceOut:
    return FaceOut(
        box=np.round(face.box_xyxy.astype(float), _COORDINATE_DECIMALS).tolist(),
        score=None if face.score is None else round(face.score, 4),
        landmarks=np.round(face.landmarks.astype(float), _COORDINATE_DECIMALS).tolist(),
        embedding=None if face.embedding is None else face.embedding.astype(float).tolist(),
        region_map=None if layers is None else [layer_out(layer) for layer in layers],
    )


async def run_pipeline(
    request: Request, endpoint: str, function: Callable[..., T], *args: object
) -> tuple[T, float]:
    """Run `function(*args)` through the inference gate; returns its result and its own time in ms."""

    def timed() -> tuple[T, float]:
        start = time.perf_counter()
        result = function(*args)
        return result, time.perf_counter() - start

    state = request.app.state
    result, seconds = await state.gate.run(timed)
    state.metrics.inference.labels(endpoint=endpoint).observe(seconds)
    return result, round(seconds * 1000, 2)


# -- /v1 --------------------------------------------------------------------------------------------------
def build_api_router() -> APIRouter:
    """The `/v1` routes."""
    router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["faces"])
    image_errors = _errors(400, 401, 408, 413, 415, 422, 429, 503)

    @router.post(
        "/embed/json",
        operation_id="embed_json",
        response_model=EmbedResponse,
        summary="Embed every face of a photo (base64 JSON)",
        responses=image_errors,
        openapi_extra=json_body(EmbedRequest),
    )
    @router.post(
        "/embed",
        operation_id="embed",
        response_model=EmbedResponse,
        summary="Embed every face of a photo (multipart upload)",
        responses=image_errors,
        openapi_extra=multipart_body(EmbedForm),
    )
    async def embed(request: Request, engine: ReadyEngine) -> EmbedResponse:
        """Detect every face (largest box first: `faces[0]` is "the" face), align each to 112x112 and return
        its embedding. Send `image` as a multipart file or as base64 in JSON."""
        settings = get_settings(request)
        options, images = await read_request(request, EmbedOptions, ("image",), settings.max_upload_bytes)

        def job() -> list[tuple[Face, list[LayerMask] | None]]:
            faces = engine.embed_photo(images["image"], options.aligned)
            return [(face, engine.layer_masks(face) if options.region_map else None) for face in faces]

        faces, time_ms = await run_pipeline(request, "embed", job)
        request.app.state.metrics.faces.inc(0 if options.aligned else len(faces))
        return EmbedResponse(
            faces=[face_out(face, layers) for face, layers in faces],
            model=model_label(engine),
            time_ms=time_ms,
        )

    @router.post(
        "/verify/json",
        operation_id="verify_json",
        response_model=VerifyResponse,
        summary="Are the faces of two photos the same person? (base64 JSON)",
        responses=image_errors,
        openapi_extra=json_body(VerifyRequest),
    )
    @router.post(
        "/verify",
        operation_id="verify",
        response_model=VerifyResponse,
        summary="Are the faces of two photos the same person? (multipart upload)",
        responses=image_errors,
        openapi_extra=multipart_body(VerifyForm),
    )
    async def verify(request: Request, engine: ReadyEngine) -> VerifyResponse:
        """Embed the largest face of `image1` and of `image2` and compare them: `similarity` is their cosine
        similarity, `verified` is `similarity >= threshold`."""
        settings = get_settings(request)
        options, images = await read_request(
            request, VerifyOptions, ("image1", "image2"), settings.max_upload_bytes
        )
        (first, second, similarity), time_ms = await run_pipeline(
            request, "verify", engine.verify_photos, images["image1"], images["image2"], options.aligned
        )
        request.app.state.metrics.faces.inc(0 if options.aligned else 2)
        threshold, operating_point = resolve_threshold(engine.card, options.threshold, settings.threshold)
        return VerifyResponse(
            similarity=round(similarity, 6),
            threshold=threshold,
            operating_point=operating_point,
            verified=similarity >= threshold,
            faces=[face_out(first), face_out(second)],
            model=model_label(engine),
            time_ms=time_ms,
        )

    @router.post(
        "/region-map/png",
        operation_id="region_map_png",
        response_class=PNGResponse,
        summary="Region maps as a PNG picture (multipart upload)",
        responses={
            **_errors(400, 401, 406, 408, 413, 415, 422, 429, 503),
            200: PNG_RESPONSE,
        },
        openapi_extra=multipart_body(RegionMapForm),
    )
    @router.post(
        "/region-map/json",
        operation_id="region_map_json",
        response_model=RegionMapResponse,
        summary="Which DRConv filter serves which part of the face (base64 JSON)",
        responses=image_errors,
        openapi_extra=json_body(RegionMapRequest),
    )
    @router.post(
        "/region-map",
        operation_id="region_map",
        response_model=RegionMapResponse,
        summary="Which DRConv filter serves which part of the face (multipart upload)",
        responses=image_errors,
        openapi_extra=multipart_body(RegionMapForm),
    )
    async def region_map(request: Request, engine: ReadyEngine) -> Any:
        """For face `face_index` (0 = largest), every DRConv layer's guided mask: each cell of the layer's
        feature map belongs to one of `regions` regions, and each region has its own filter."""
        settings = get_settings(request)
        options, images = await read_request(request, RegionMapOptions, ("image",), settings.max_upload_bytes)
        png_type = png_media_type(request, options.format, "format" in options.model_fields_set)

        def job() -> tuple[Face, list[LayerMask], bytes | None]:
            face, layers = engine.region_map(images["image"], options.aligned, options.face_index)
            picture = render_region_png(face.aligned, layers) if png_type else None
            return face, layers, picture

        (face, layers, picture), time_ms = await run_pipeline(request, "region_map", job)
        if picture is not None:
            return Response(content=picture, media_type=png_type)
        return RegionMapResponse(
            face=face_out(face),
            layers=[layer_out(layer) for layer in layers],
            model=model_label(engine),
            time_ms=time_ms,
        )

    @router.get(
        "/model",
        operation_id="get_model",
        response_model=ModelInfo,
        summary="The served model",
        responses=_errors(401, 503),
    )
    async def model_info(request: Request, engine: ReadyEngine) -> ModelInfo:
        """Name, version, architecture, thresholds and evaluation results, from the model card."""
        card = engine.card
        backbone = card.backbone
        threshold, operating_point = resolve_threshold(card, None, get_settings(request).threshold)
        architecture = (
            f"MobileFaceNet with DRConv ({card.region_num} regions)" if backbone.drconv else "MobileFaceNet"
        )
        return ModelInfo(
            name=card.name,
            version=card.version,
            created=card.created,
            trained=card.trained,
            architecture=architecture,
            region_num=card.region_num,
            embedding_dim=card.embedding_dim,
            drconv_layers=[name for name, _ in engine.model.drconv_layers()],
            threshold=threshold,
            operating_point=operating_point,
            thresholds=card.thresholds,
            operating_points=card.operating_points,
            eval=card.eval,
            backbone=backbone.model_dump(mode="json"),
            notes=card.notes,
            region_colors=region_colors_hex(card.region_num),
            aligned_landmarks=np.round(ARCFACE_TEMPLATE_112.astype(float), 4).tolist(),
        )

    return router


# -- operations (never behind an API key) ---------------------------------------------------------------
ops_router = APIRouter(tags=["operations"])


@ops_router.get(
    "/healthz",
    operation_id="healthz",
    response_model=HealthStatus,
    summary="Process is up",
    responses=_errors(503),
)
@ops_router.head("/healthz", include_in_schema=False)  # load balancers probe with HEAD
async def healthz(request: Request) -> HealthStatus:
    """200 while the process serves requests (also during model loading); 503 if the model failed to load."""
    load_error: str | None = request.app.state.load_error
    if load_error is not None:
        raise NotReadyError(f"model failed to load: {load_error}")
    engine: Engine | None = request.app.state.engine
    return HealthStatus(status="ok", model=None if engine is None else model_label(engine))


@ops_router.get(
    "/readyz",
    operation_id="readyz",
    response_model=HealthStatus,
    summary="Model loaded and warmed up",
    responses=_errors(503),
)
@ops_router.head("/readyz", include_in_schema=False)  # load balancers probe with HEAD
async def readyz(request: Request) -> HealthStatus:
    """200 once the model is loaded and a warm-up inference has run; 503 `not_ready` before."""
    engine = require_engine(request)
    return HealthStatus(status="ready", model=model_label(engine))


@ops_router.get(
    "/metrics",
    operation_id="metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text."}
    },
)
@ops_router.head("/metrics", include_in_schema=False)  # load balancers probe with HEAD
async def metrics(request: Request) -> Response:
    """Request counts and latency by route and status, pipeline time, faces detected, errors by code."""
    collectors = request.app.state.metrics
    return Response(content=collectors.render(), media_type=collectors.content_type)
