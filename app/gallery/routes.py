"""Gallery routes: subjects and their enrolled faces, 1:1 verification against a subject, 1:N identification.

Same conventions as the other `/v1` routes: API key when configured, photos as multipart or base64 JSON,
the one error shape. Photos go through the same engine and inference gate; database calls run on a worker
thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request, Response

from app.dependencies import ReadyEngine, SettingsDep, require_api_key
from app.engine import EmbeddedFace, Engine
from app.gallery.errors import ModelMismatchError
from app.gallery.index import Candidate
from app.gallery.schemas import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    EnrolForm,
    EnrolledFace,
    EnrolOptions,
    EnrolResponse,
    IdentifyCandidate,
    IdentifyForm,
    IdentifyOptions,
    IdentifyResponse,
    ProbeForm,
    ProbeOptions,
    SubjectCreate,
    SubjectDetail,
    SubjectOut,
    SubjectPage,
    SubjectVerifyResponse,
)
from app.gallery.service import Gallery, largest_face, reenrol_advice, served_model
from app.gallery.store import ModelId, SubjectRecord, TemplateRecord
from app.inputs import read_request
from app.openapi import error_responses, multipart_body
from app.routes.convert import face_out, model_label
from app.routes.faces import run_job
from app.thresholds import resolve_threshold


def get_gallery(request: Request) -> Gallery:
    return request.app.state.gallery


GalleryDep = Annotated[Gallery, Depends(get_gallery)]
SubjectId = Annotated[str, Path(description="The subject's id.", max_length=128)]

gallery_router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["gallery"])
_PHOTO_ERRORS = error_responses(400, 401, 404, 408, 409, 413, 415, 422, 429, 503)


# -- conversions ------------------------------------------------------------------------------------------
def subject_out(subject: SubjectRecord) -> SubjectOut:
    return SubjectOut(
        id=subject.id,
        name=subject.name,
        metadata=subject.metadata,
        created_at=subject.created_at,
        face_count=subject.face_count,
    )


def enrolled_face(template: TemplateRecord, model: ModelId | None) -> EnrolledFace:
    return EnrolledFace(
        id=template.id,
        model=template.model.label,
        current_model=template.model == model,
        photo_sha256=template.photo_sha256,
        photo_stored=template.has_photo,
        box=template.box_xyxy,
        score=template.score,
        created_at=template.created_at,
    )


# -- subjects ----------------------------------------------------------------------------------------------
@gallery_router.post(
    "/subjects",
    operation_id="create_subject",
    status_code=201,
    response_model=SubjectOut,
    summary="Create a subject (a person to enrol faces for)",
    responses=error_responses(401, 409, 422),
)
async def create_subject(body: SubjectCreate, gallery: GalleryDep) -> SubjectOut:
    """A new subject without faces. Give your own `id` (e.g. your user id) or let the server make one;
    an `id` that exists already is a 409 `conflict`."""
    subject = await asyncio.to_thread(gallery.store.create_subject, body.id, body.name, body.metadata)
    return subject_out(subject)


@gallery_router.get(
    "/subjects",
    operation_id="list_subjects",
    response_model=SubjectPage,
    summary="List subjects, a page at a time",
    responses=error_responses(401, 422),
)
async def list_subjects(
    gallery: GalleryDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Page size.")] = DEFAULT_PAGE_SIZE,
    after: Annotated[
        str | None, Query(max_length=128, description="`next_after` of the previous page.")
    ] = None,
) -> SubjectPage:
    """Subjects ordered by id; follow `next_after` for the next page."""
    subjects = await asyncio.to_thread(gallery.store.list_subjects, limit + 1, after)
    page = subjects[:limit]
    return SubjectPage(
        subjects=[subject_out(s) for s in page], next_after=page[-1].id if len(subjects) > limit else None
    )


@gallery_router.get(
    "/subjects/{subject_id}",
    operation_id="get_subject",
    response_model=SubjectDetail,
    summary="A subject and its enrolled faces",
    responses=error_responses(401, 404),
)
async def get_subject(subject_id: SubjectId, request: Request, gallery: GalleryDep) -> SubjectDetail:
    """The subject and what is stored for each of its faces (no embeddings, no photos)."""
    subject, templates = await asyncio.to_thread(gallery.store.subject_templates, subject_id)
    engine: Engine | None = request.app.state.engine
    model = None if engine is None else served_model(engine)
    return SubjectDetail(
        **subject_out(subject).model_dump(), faces=[enrolled_face(t, model) for t in templates]
    )


@gallery_router.delete(
    "/subjects/{subject_id}",
    operation_id="delete_subject",
    status_code=204,
    response_class=Response,
    summary="Delete a subject, its templates and any stored photos",
    responses=error_responses(401, 404),
)
async def delete_subject(subject_id: SubjectId, gallery: GalleryDep) -> Response:
    """Deletes the subject with every template and stored photo, in one transaction; gone for good."""
    await asyncio.to_thread(gallery.store.delete_subject, subject_id)
    await asyncio.to_thread(gallery.sync)
    return Response(status_code=204)


# -- faces -------------------------------------------------------------------------------------------------
@gallery_router.post(
    "/subjects/{subject_id}/faces",
    operation_id="enrol_face",
    status_code=201,
    response_model=EnrolResponse,
    summary="Enrol a photo's face into a subject",
    responses={
        **_PHOTO_ERRORS,
        200: {"model": EnrolResponse, "description": "This photo was enrolled before."},
    },
    openapi_extra=multipart_body(EnrolForm),
)
async def enrol_face(
    subject_id: SubjectId,
    request: Request,
    response: Response,
    engine: ReadyEngine,
    gallery: GalleryDep,
    settings: SettingsDep,
) -> EnrolResponse:
    """Embed the photo's largest face and store it as a template of the subject: its embedding, the model
    that made it, the photo's SHA-256, box and time (and the photo itself only with
    DRFACE_GALLERY_KEEP_PHOTOS). 201 once it is committed; 200 when the same photo was enrolled before."""
    options, images = await read_request(request, EnrolOptions, ("image",), settings.max_upload_bytes)
    photo = images["image"]
    await asyncio.to_thread(gallery.store.get_subject, subject_id)  # 404 before spending an inference
    face, time_ms = await run_job(request, "enrol", largest_face, engine, photo, options.aligned)
    request.app.state.metrics.faces.inc(0 if options.aligned else 1)
    model = served_model(engine)
    assert face.embedding is not None
    template, created = await asyncio.to_thread(
        gallery.store.add_template,
        subject_id,
        model,
        face.embedding,
        hashlib.sha256(photo).hexdigest(),
        np.round(face.face.box_xyxy.astype(float), 2).tolist(),
        None if face.face.score is None else round(face.face.score, 4),
        options.aligned,
        photo if gallery.keep_photos else None,
    )
    await asyncio.to_thread(gallery.sync)
    if not created:
        response.status_code = 200
    return EnrolResponse(
        subject_id=subject_id,
        face=enrolled_face(template, model),
        created=created,
        detected=face_out(face.face),
        time_ms=time_ms,
    )


@gallery_router.delete(
    "/subjects/{subject_id}/faces/{face_id}",
    operation_id="delete_face",
    status_code=204,
    response_class=Response,
    summary="Delete one enrolled face and its stored photo",
    responses=error_responses(401, 404),
)
async def delete_face(
    subject_id: SubjectId,
    face_id: Annotated[str, Path(max_length=128, description="The face's id.")],
    gallery: GalleryDep,
) -> Response:
    """Deletes the template and its stored photo, if any; gone for good."""
    await asyncio.to_thread(gallery.store.delete_template, subject_id, face_id)
    await asyncio.to_thread(gallery.sync)
    return Response(status_code=204)


# -- 1:1 and 1:N -----------------------------------------------------------------------------------------
@gallery_router.post(
    "/subjects/{subject_id}/verify",
    operation_id="verify_subject",
    response_model=SubjectVerifyResponse,
    summary="Is the face of this photo the enrolled subject?",
    responses=_PHOTO_ERRORS,
    openapi_extra=multipart_body(ProbeForm),
)
async def verify_subject(
    subject_id: SubjectId, request: Request, engine: ReadyEngine, gallery: GalleryDep, settings: SettingsDep
) -> SubjectVerifyResponse:
    """Embed the probe's largest face and compare it with each of the subject's faces made by the served
    model: `similarity` is the best cosine similarity, `verified` is `similarity >= threshold`. A subject
    whose faces were all made by another model is a 409 `model_mismatch` (re-enrol, or
    `drface gallery reembed`)."""
    options, images = await read_request(request, ProbeOptions, ("image",), settings.max_upload_bytes)
    threshold, operating_point = resolve_threshold(engine.card, options.threshold, settings.threshold)
    await asyncio.to_thread(gallery.store.get_subject, subject_id)
    model = served_model(engine)

    def job() -> tuple[EmbeddedFace, float, str]:
        face = largest_face(engine, images["image"], options.aligned)
        similarity, face_id = gallery.verify(subject_id, face.embedding, model)
        return face, similarity, face_id

    (face, similarity, face_id), time_ms = await run_job(request, "subject_verify", job)
    request.app.state.metrics.faces.inc(0 if options.aligned else 1)
    return SubjectVerifyResponse(
        subject_id=subject_id,
        similarity=round(similarity, 6),
        face_id=face_id,
        threshold=threshold,
        operating_point=operating_point,
        verified=similarity >= threshold,
        face=face_out(face.face),
        model=model_label(engine),
        time_ms=time_ms,
    )


@gallery_router.post(
    "/identify",
    operation_id="identify",
    response_model=IdentifyResponse,
    summary="Who of the enrolled subjects is this? (1:N)",
    responses=_PHOTO_ERRORS,
    openapi_extra=multipart_body(IdentifyForm),
)
async def identify(
    request: Request, engine: ReadyEngine, gallery: GalleryDep, settings: SettingsDep
) -> IdentifyResponse:
    """Embed the probe's largest face and search every enrolled face of the served model (exact cosine
    similarity). `candidates` are the `top_k` most similar subjects; `result` is `match` with `subject_id`
    when the best passes the threshold, else `unknown`."""
    options, images = await read_request(request, IdentifyOptions, ("image",), settings.max_upload_bytes)
    threshold, operating_point = resolve_threshold(engine.card, options.threshold, settings.threshold)

    def job() -> tuple[EmbeddedFace, list[Candidate], int]:
        face = largest_face(engine, images["image"], options.aligned)
        index = gallery.sync()
        return face, index.search(face.embedding, options.top_k), len(index)

    (face, found, searched), time_ms = await run_job(request, "identify", job)
    if searched == 0 and gallery.other_model_templates:
        raise ModelMismatchError(
            f"every enrolled face ({gallery.other_model_templates}) was made by another model than the "
            f"served {model_label(engine)}; embeddings of different models cannot be compared: "
            + reenrol_advice()
        )
    request.app.state.metrics.faces.inc(0 if options.aligned else 1)
    names = await asyncio.to_thread(gallery.store.subject_names, [c.subject_id for c in found])
    candidates = [
        IdentifyCandidate(
            subject_id=c.subject_id,
            name=names.get(c.subject_id),
            similarity=round(c.similarity, 6),
            face_id=c.template_id,
            match=c.similarity >= threshold,
        )
        for c in found
    ]
    matched = bool(candidates) and candidates[0].match
    return IdentifyResponse(
        result="match" if matched else "unknown",
        subject_id=candidates[0].subject_id if matched else None,
        candidates=candidates,
        threshold=threshold,
        operating_point=operating_point,
        searched_templates=searched,
        templates_of_other_models=gallery.other_model_templates,
        face=face_out(face.face),
        model=model_label(engine),
        time_ms=time_ms,
    )
