"""`/v1/embed`, `/v1/verify`, `/v1/region-map`: photos in, embeddings, similarity or region maps out.

Each route parses its body (`app.inputs`), runs one engine job on the inference threads (`run_job`) and
shapes the answer; pipeline errors become HTTP errors in `app/errors.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from app.dependencies import ReadyEngine, SettingsDep, require_api_key
from app.engine import EmbeddedFace, LayerMask
from app.inputs import png_media_type, read_request
from app.openapi import PNG_RESPONSE, error_responses, json_body, multipart_body
from app.region_png import render_region_png
from app.routes.convert import face_out, layer_out, model_label
from app.schemas import (
    EmbedForm,
    EmbedOptions,
    EmbedRequest,
    EmbedResponse,
    RegionMapForm,
    RegionMapOptions,
    RegionMapRequest,
    RegionMapResponse,
    VerifyForm,
    VerifyOptions,
    VerifyRequest,
    VerifyResponse,
)
from app.thresholds import resolve_threshold
from model.pipeline import AlignedFace

T = TypeVar("T")
RouteFunction = TypeVar("RouteFunction", bound=Callable[..., Any])

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["faces"])


async def run_job(
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


IMAGE_ERRORS = error_responses(400, 401, 408, 413, 415, 422, 429, 503)


class PNGResponse(Response):
    media_type = "image/png"


def photo_route(
    path: str,
    operation_id: str,
    summary: str,
    response_model: type[BaseModel],
    form: type[BaseModel],
    body: type[BaseModel],
) -> Callable[[RouteFunction], RouteFunction]:
    """Register a POST route that takes photos twice, one body type per operation: `path` documents the
    multipart `form`, `path/json` the base64 JSON `body` (both paths read both; see app.inputs)."""

    def register(function: RouteFunction) -> RouteFunction:
        for route_path, route_id, route_summary, extra in (
            (f"{path}/json", f"{operation_id}_json", f"{summary} (base64 JSON)", json_body(body)),
            (path, operation_id, f"{summary} (multipart upload)", multipart_body(form)),
        ):
            router.post(
                route_path,
                operation_id=route_id,
                response_model=response_model,
                summary=route_summary,
                responses=IMAGE_ERRORS,
                openapi_extra=extra,
            )(function)
        return function

    return register


@photo_route("/embed", "embed", "Embed every face of a photo", EmbedResponse, EmbedForm, EmbedRequest)
async def embed(request: Request, engine: ReadyEngine, settings: SettingsDep) -> EmbedResponse:
    """Detect every face (largest box first: `faces[0]` is "the" face), align each to 112x112 and return
    its embedding. Send `image` as a multipart file or as base64 in JSON."""
    options, images = await read_request(request, EmbedOptions, ("image",), settings.max_upload_bytes)

    def job() -> list[tuple[EmbeddedFace, list[LayerMask] | None]]:
        faces = engine.embed_photo(images["image"], options.aligned)
        return [(face, engine.layer_masks(face.face) if options.region_map else None) for face in faces]

    faces, time_ms = await run_job(request, "embed", job)
    request.app.state.metrics.faces.inc(0 if options.aligned else len(faces))
    return EmbedResponse(
        faces=[face_out(face.face, face.embedding, layers) for face, layers in faces],
        model=model_label(engine),
        time_ms=time_ms,
    )


@photo_route(
    "/verify",
    "verify",
    "Are the faces of two photos the same person?",
    VerifyResponse,
    VerifyForm,
    VerifyRequest,
)
async def verify(request: Request, engine: ReadyEngine, settings: SettingsDep) -> VerifyResponse:
    """Embed the largest face of `image1` and of `image2` and compare them: `similarity` is their cosine
    similarity, `verified` is `similarity >= threshold`."""
    options, images = await read_request(
        request, VerifyOptions, ("image1", "image2"), settings.max_upload_bytes
    )
    (first, second, similarity), time_ms = await run_job(
        request, "verify", engine.verify_photos, images["image1"], images["image2"], options.aligned
    )
    request.app.state.metrics.faces.inc(0 if options.aligned else 2)
    threshold, operating_point = resolve_threshold(engine.card, options.threshold, settings.threshold)
    return VerifyResponse(
        similarity=round(similarity, 6),
        threshold=threshold,
        operating_point=operating_point,
        verified=similarity >= threshold,
        faces=[face_out(first.face, first.embedding), face_out(second.face, second.embedding)],
        model=model_label(engine),
        time_ms=time_ms,
    )


@router.post(
    "/region-map/png",
    operation_id="region_map_png",
    response_class=PNGResponse,
    summary="Region maps as a PNG picture (multipart upload)",
    responses={
        **error_responses(400, 401, 406, 408, 413, 415, 422, 429, 503),
        200: PNG_RESPONSE,
    },
    openapi_extra=multipart_body(RegionMapForm),
)
@photo_route(
    "/region-map",
    "region_map",
    "Which DRConv filter serves which part of the face",
    RegionMapResponse,
    RegionMapForm,
    RegionMapRequest,
)
async def region_map(request: Request, engine: ReadyEngine, settings: SettingsDep) -> Any:
    """For face `face_index` (0 = largest), every DRConv layer's guided mask: each cell of the layer's
    feature map belongs to one of `regions` regions, and each region has its own filter."""
    options, images = await read_request(request, RegionMapOptions, ("image",), settings.max_upload_bytes)
    png_type = png_media_type(request, options.format, "format" in options.model_fields_set)

    def job() -> tuple[AlignedFace, list[LayerMask], bytes | None]:
        face, layers = engine.region_map(images["image"], options.aligned, options.face_index)
        picture = render_region_png(face.aligned, layers) if png_type else None
        return face, layers, picture

    (face, layers, picture), time_ms = await run_job(request, "region_map", job)
    if picture is not None:
        return Response(content=picture, media_type=png_type)
    return RegionMapResponse(
        face=face_out(face),
        layers=[layer_out(layer) for layer in layers],
        model=model_label(engine),
        time_ms=time_ms,
    )
