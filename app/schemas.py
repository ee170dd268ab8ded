"""Request and response models of the REST API; their descriptions and examples make up `/docs`."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.errors import ERROR_CODES
from app.thresholds import ThresholdChoice

_B64_DESCRIPTION = (
    "The photo (JPEG, PNG, WebP, BMP or single-frame GIF), base64-encoded; a `data:image/...;base64,` prefix "
    "and line breaks are allowed. No URLs: the server never fetches anything."
)
_FILE_DESCRIPTION = (
    "The photo file (JPEG, PNG, WebP, BMP or single-frame GIF). A part without a filename "
    "(`curl -F 'image=<photo.jpg'`) is read as the file too."
)
# Image strings of the JSON bodies: standard base64 (JSON Schema's contentEncoding, OpenAPI's `format: byte`).
_BASE64_IMAGE = {"contentEncoding": "base64"}
_FILE_PART = {"format": "binary"}
_ALIGNED_DESCRIPTION = (
    "True when the photo is already a 112x112 face crop aligned to the ArcFace 5-point template: detection "
    "is skipped. Any other size is refused (422)."
)


# -- options, shared by the JSON and the multipart form of each endpoint ------------------------------------
class EmbedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    aligned: bool = Field(False, description=_ALIGNED_DESCRIPTION)
    region_map: bool = Field(False, description="Also return each face's DRConv region maps (`region_map`).")


class VerifyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    aligned: bool = Field(False, description=_ALIGNED_DESCRIPTION + " Applies to both images.")
    threshold: ThresholdChoice | None = Field(
        None,
        description="Cosine-similarity threshold for `verified`: a number in [-1, 1], or the name of one of "
        "the model's operating points (`far_1e-2`, `far_1e-3`, `far_1e-4`, `best_accuracy`; see "
        "`GET /v1/model`). Default: the server's (`far_1e-3` unless DRFACE_THRESHOLD says otherwise).",
        examples=["far_1e-4", 0.35],
    )


class RegionMapChoice(BaseModel):
    """Which face of the photo `/v1/region-map` and `/v1/region-map/png` show."""

    model_config = ConfigDict(extra="forbid")

    aligned: bool = Field(False, description=_ALIGNED_DESCRIPTION)
    face_index: int = Field(0, ge=0, description="Which face, by size: 0 = the largest.")


class RegionMapOptions(RegionMapChoice):
    """What the region-map routes read: `format` is kept for `curl -F format=png` on `/v1/region-map`;
    the schema offers `/v1/region-map/png` instead (one response type per operation)."""

    format: Literal["json", "png"] = Field(
        "json",
        description="`json`: the masks as integer arrays; `png`: the aligned face overlaid with each layer's "
        "regions (one colour per region, with a legend).",
    )


# -- request bodies: multipart forms (file parts) and JSON objects (base64 strings), same field names -------
# The routes parse bodies themselves (app.inputs); these models are the schema's word for each body.
class EmbedForm(EmbedOptions):
    """`POST /v1/embed`: the photo as a multipart file, options as form fields."""

    image: bytes = Field(description=_FILE_DESCRIPTION, json_schema_extra=_FILE_PART)


class EmbedRequest(EmbedOptions):
    """`POST /v1/embed/json`: the photo as a base64 string."""

    image: str = Field(description=_B64_DESCRIPTION, json_schema_extra=_BASE64_IMAGE)


class VerifyForm(VerifyOptions):
    """`POST /v1/verify`: the two photos as multipart files, options as form fields."""

    image1: bytes = Field(description=_FILE_DESCRIPTION, json_schema_extra=_FILE_PART)
    image2: bytes = Field(description=_FILE_DESCRIPTION, json_schema_extra=_FILE_PART)


class VerifyRequest(VerifyOptions):
    """`POST /v1/verify/json`: the two photos as base64 strings."""

    image1: str = Field(description=_B64_DESCRIPTION, json_schema_extra=_BASE64_IMAGE)
    image2: str = Field(description=_B64_DESCRIPTION, json_schema_extra=_BASE64_IMAGE)


class RegionMapForm(RegionMapChoice):
    """`POST /v1/region-map` and `/v1/region-map/png`: the photo as a multipart file."""

    image: bytes = Field(description=_FILE_DESCRIPTION, json_schema_extra=_FILE_PART)


class RegionMapRequest(RegionMapChoice):
    """`POST /v1/region-map/json`: the photo as a base64 string."""

    image: str = Field(description=_B64_DESCRIPTION, json_schema_extra=_BASE64_IMAGE)


# -- responses -------------------------------------------------------------------------------------------
class RegionLayer(BaseModel):
    """Guided mask of one DRConv layer: which of the `regions` filters serves each cell of its feature map."""

    name: str = Field(description="Layer name in the network.", examples=["stage1.0.project"])
    regions: int = Field(description="Region number m of the layer.", examples=[8])
    height: int = Field(
        description="Mask rows h (feature-map height; the face is 112 px high).", examples=[28]
    )
    width: int = Field(description="Mask columns w.", examples=[28])
    mask: list[list[int]] = Field(
        description="h x w region indices, each in [0, regions); row 0 is the top of the aligned face.",
        examples=[[[0, 3], [3, 5]]],
    )


class FaceOut(BaseModel):
    """One face. Coordinates are pixels of the uploaded image (after its EXIF rotation)."""

    box: list[float] = Field(
        min_length=4,
        max_length=4,
        description="Face box [x1, y1, x2, y2] in pixels. For `aligned=true`: the whole 112x112 crop.",
        examples=[[61.2, 48.9, 171.5, 190.3]],
    )
    score: float | None = Field(
        description="Detector confidence in [0, 1]; null for `aligned=true` (no detection).", examples=[0.998]
    )
    landmarks: list[list[float]] = Field(
        description="5 points [x, y] in pixels: left eye, right eye (as seen in the image), nose tip, "
        "left and right mouth corners. For `aligned=true`: the ArcFace template.",
        examples=[[[92.1, 105.3], [140.7, 104.8], [117.0, 133.2], [97.4, 161.0], [136.9, 160.6]]],
    )
    embedding: list[float] | None = Field(
        None,
        description="Unit-length (L2) embedding of D floats: the network on the aligned face plus on its "
        "mirror image, summed and normalised. Compare two with the dot product (cosine similarity). "
        "Null where the endpoint does not compute it (`/v1/region-map`).",
        examples=[[0.0132, -0.0517, 0.0441]],
    )
    region_map: list[RegionLayer] | None = Field(
        None, description="The face's region maps, when asked for (`region_map=true` on `/v1/embed`)."
    )


class EmbedResponse(BaseModel):
    faces: list[FaceOut] = Field(description="Every detected face, largest box first.")
    model: str = Field(
        description="Model name and version that made the embeddings.", examples=["drface@0.1.0"]
    )
    time_ms: float = Field(
        description="Pipeline time in milliseconds (decode, detect, align, network); excludes queueing.",
        examples=[31.4],
    )


class VerifyResponse(BaseModel):
    similarity: float = Field(
        description="Cosine similarity of the two largest faces' embeddings, in [-1, 1].", examples=[0.62]
    )
    threshold: float = Field(
        description="Threshold applied: the request's, else the server's default operating point.",
        examples=[0.3],
    )
    operating_point: str = Field(
        description="Where the threshold came from: an operating point of the model card (`far_1e-3`, ...), "
        "`custom` for a number, or `fallback` when the card has no calibrated thresholds.",
        examples=["far_1e-3"],
    )
    verified: bool = Field(
        description="similarity >= threshold: the same person, per this model.", examples=[True]
    )
    faces: list[FaceOut] = Field(
        min_length=2, max_length=2, description="The largest face of image1, then of image2."
    )
    model: str = Field(description="Model name and version.", examples=["drface@0.1.0"])
    time_ms: float = Field(description="Pipeline time in milliseconds for both images.", examples=[55.0])


class RegionMapResponse(BaseModel):
    face: FaceOut = Field(description="The face the maps belong to (no embedding).")
    layers: list[RegionLayer] = Field(
        description="Every DRConv layer, in network order (empty without DRConv)."
    )
    model: str = Field(description="Model name and version.", examples=["drface@0.1.0"])
    time_ms: float = Field(description="Pipeline time in milliseconds.", examples=[28.0])


class ModelInfo(BaseModel):
    """What `GET /v1/model` says about the served model (from its model card)."""

    name: str = Field(examples=["drface-mbf-drconv"])
    version: str = Field(examples=["0.1.0"])
    created: datetime = Field(description="When the artifact was made (UTC).")
    trained: bool = Field(description="False for randomly initialised weights: embeddings are meaningless.")
    architecture: str = Field(examples=["MobileFaceNet with DRConv (8 regions)"])
    region_num: int = Field(description="Regions per DRConv layer; 0 without DRConv.", examples=[8])
    embedding_dim: int = Field(description="Embedding length D.", examples=[512])
    drconv_layers: list[str] = Field(description="Names of the DRConv layers (those `/v1/region-map` shows).")
    threshold: float = Field(description="Default `/v1/verify` threshold.", examples=[0.3])
    operating_point: str = Field(
        description="Name of the default threshold's operating point (`custom` for a number).",
        examples=["far_1e-3"],
    )
    thresholds: dict[str, float] = Field(description="Every threshold on the card, by operating point.")
    operating_points: dict[str, dict[str, float | int]] = Field(
        description="Per operating point: threshold, and the false and true accept rates measured at it on "
        "held-out identities never trained on, with the impostor and genuine pair counts behind them."
    )
    eval: dict[str, Any] = Field(description="Evaluation metrics, by protocol name.")
    backbone: dict[str, Any] = Field(description="Every architecture option.")
    notes: str = Field(description="Limits and intended use, from the card.")
    region_colors: list[str] = Field(
        default_factory=list,
        description="CSS colour `#rrggbb` of region j at index j, one per region: the colours the PNG of "
        "`/v1/region-map` blends onto the face, for clients that draw the JSON masks themselves.",
        examples=[["#ff2626", "#3d26bf"]],
    )
    aligned_landmarks: list[list[float]] = Field(
        default_factory=list,
        description="Where alignment puts the 5 landmarks (order of a face's `landmarks`) in the 112x112 "
        "aligned face that region-map masks cover: the ArcFace template, pixels [x, y].",
        examples=[[[38.29, 51.7], [73.53, 51.5], [56.03, 71.74], [41.55, 92.37], [70.73, 92.2]]],
    )


class HealthStatus(BaseModel):
    status: Literal["ok", "ready"] = Field(description="`ok` from /healthz, `ready` from /readyz.")
    model: str | None = Field(None, description="Model name and version, once loaded.")


ErrorCode = Enum("ErrorCode", {code: code for code in ERROR_CODES}, type=str)
ErrorCode.__doc__ = "Stable machine-readable error code; docs/api.md says when each is answered."


class ErrorDetail(BaseModel):
    code: ErrorCode = Field(description="Stable machine-readable code.", examples=["no_face"])
    message: str = Field(description="What went wrong, for humans.", examples=["no face found in the image"])


class ErrorResponse(BaseModel):
    """The one shape of every error response."""

    error: ErrorDetail
