"""Request and response models of the gallery routes (`/v1/subjects`, `/v1/identify`), for `/docs`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas import _BASE64_IMAGE, _FILE_DESCRIPTION, _FILE_PART, FaceOut, VerifyOptions
from app.thresholds import ThresholdChoice

SUBJECT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
DEFAULT_TOP_K = 5
MAX_TOP_K = 100
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

_B64_DESCRIPTION = "The photo, base64-encoded (as for `/v1/embed`)."
_THRESHOLD_DESCRIPTION = VerifyOptions.model_fields["threshold"].description


# -- subjects ----------------------------------------------------------------------------------------------
class SubjectCreate(BaseModel):
    """`POST /v1/subjects`: a new, empty subject; enrol faces into it next."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        None,
        pattern=SUBJECT_ID_PATTERN,
        description="Your id for the person (letters, digits, `._:@-`, at most 128); generated when absent.",
        examples=["user-4711"],
    )
    name: str | None = Field(None, max_length=256, description="Display name.", examples=["Ada Lovelace"])
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Any JSON object you want kept with the subject (stored as given, returned as is).",
        examples=[{"department": "R&D"}],
    )


class SubjectOut(BaseModel):
    id: str = Field(examples=["user-4711"])
    name: str | None = Field(None, examples=["Ada Lovelace"])
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: str = Field(description="UTC, ISO 8601.", examples=["2026-11-29T19:30:00.000Z"])
    face_count: int = Field(description="Enrolled faces (templates), of any model.", examples=[2])


class EnrolledFace(BaseModel):
    """One template: what is stored for an enrolled face (never the photo unless the server keeps photos)."""

    id: str = Field(description="Face (template) id, for `DELETE /v1/subjects/{id}/faces/{face_id}`.")
    model: str = Field(description="Model name@version whose embedding this is.", examples=["drface@0.1.0"])
    current_model: bool = Field(description="True when made by the served model (searched); false: stale.")
    photo_sha256: str = Field(description="SHA-256 of the uploaded photo bytes (hex).")
    photo_stored: bool = Field(
        description="True when the server kept the photo (DRFACE_GALLERY_KEEP_PHOTOS)."
    )
    box: list[float] = Field(description="Face box [x1, y1, x2, y2] in the enrolment photo, pixels.")
    score: float | None = Field(description="Detector confidence; null for `aligned=true`.")
    created_at: str = Field(description="UTC, ISO 8601.")


class SubjectDetail(SubjectOut):
    faces: list[EnrolledFace] = Field(description="Every enrolled face, oldest first.")


class SubjectPage(BaseModel):
    subjects: list[SubjectOut] = Field(description="Subjects ordered by id.")
    next_after: str | None = Field(
        description="Pass as `after` to get the next page; null on the last page.", examples=["user-4711"]
    )


# -- photo routes: options (form fields or JSON) and JSON bodies ---------------------------------------------
class EnrolOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    aligned: bool = Field(False, description="True when the photo is already a 112x112 aligned face crop.")


class ProbeOptions(EnrolOptions):
    threshold: ThresholdChoice | None = Field(None, description=_THRESHOLD_DESCRIPTION)


class IdentifyOptions(ProbeOptions):
    top_k: int = Field(
        DEFAULT_TOP_K, ge=1, le=MAX_TOP_K, description="How many best-matching subjects to return."
    )


class EnrolForm(EnrolOptions):
    """`POST /v1/subjects/{id}/faces`: the photo as a multipart file, options as form fields."""

    image: bytes = Field(description=_FILE_DESCRIPTION, json_schema_extra=_FILE_PART)


class EnrolRequest(EnrolOptions):
    """`POST /v1/subjects/{id}/faces` as JSON (the same path reads it)."""

    image: str = Field(description=_B64_DESCRIPTION, json_schema_extra=_BASE64_IMAGE)


class ProbeForm(ProbeOptions):
    """`POST /v1/subjects/{id}/verify`: the photo as a multipart file, options as form fields."""

    image: bytes = Field(description=_FILE_DESCRIPTION, json_schema_extra=_FILE_PART)


class ProbeRequest(ProbeOptions):
    """`POST /v1/subjects/{id}/verify` as JSON (the same path reads it)."""

    image: str = Field(description=_B64_DESCRIPTION, json_schema_extra=_BASE64_IMAGE)


class IdentifyForm(IdentifyOptions):
    """`POST /v1/identify`: the photo as a multipart file, options as form fields."""

    image: bytes = Field(description=_FILE_DESCRIPTION, json_schema_extra=_FILE_PART)


class IdentifyRequest(IdentifyOptions):
    """`POST /v1/identify` as JSON (the same path reads it)."""

    image: str = Field(description=_B64_DESCRIPTION, json_schema_extra=_BASE64_IMAGE)


# -- photo routes: responses ---------------------------------------------------------------------------
class EnrolResponse(BaseModel):
    subject_id: str
    face: EnrolledFace
    created: bool = Field(
        description="False when this photo was already enrolled for the subject with this model: the "
        "existing face is returned and nothing is added (so retrying an enrolment is safe)."
    )
    detected: FaceOut = Field(description="The face found in the photo (its largest), without embedding.")
    time_ms: float = Field(description="Pipeline time in milliseconds.")


class SubjectVerifyResponse(BaseModel):
    subject_id: str
    similarity: float = Field(
        description="Best cosine similarity of the probe's largest face to the subject's faces, in [-1, 1]."
    )
    face_id: str = Field(description="The enrolled face that gave `similarity`.")
    threshold: float
    operating_point: str = Field(description="As for `/v1/verify`.")
    verified: bool = Field(description="similarity >= threshold: the probe is this subject, per this model.")
    face: FaceOut = Field(description="The probe's largest face, without embedding.")
    model: str
    time_ms: float


class IdentifyCandidate(BaseModel):
    subject_id: str
    name: str | None = None
    similarity: float = Field(description="Best cosine similarity to the subject's faces.")
    face_id: str = Field(description="The enrolled face that gave `similarity`.")
    match: bool = Field(description="similarity >= threshold.")


class IdentifyResponse(BaseModel):
    result: Literal["match", "unknown"] = Field(
        description="`match` when the best candidate passes the threshold, else `unknown`."
    )
    subject_id: str | None = Field(description="The best candidate's id when `result` is `match`, else null.")
    candidates: list[IdentifyCandidate] = Field(
        description="Up to `top_k` subjects, most similar first, whether or not they pass the threshold."
    )
    threshold: float
    operating_point: str
    searched_templates: int = Field(description="Templates of the served model searched (exhaustively).")
    templates_of_other_models: int = Field(
        description="Templates made by another model, not searched; re-enrol or `drface gallery reembed`."
    )
    face: FaceOut = Field(description="The probe's largest face, without embedding.")
    model: str
    time_ms: float = Field(description="Pipeline plus search time in milliseconds.")
