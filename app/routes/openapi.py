"""OpenAPI documentation the routes share: their error responses and the two accepted request bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from app.schemas import ErrorResponse


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries documenting the one error shape for each status."""
    return {status: {"model": ErrorResponse} for status in statuses}


IMAGE_ERRORS = error_responses(400, 401, 408, 413, 415, 422, 429, 503)
"""The errors a route that reads photos can answer with."""


def photo_request_body(
    json_model: type[BaseModel], options: type[BaseModel], files: tuple[str, ...]
) -> dict[str, Any]:
    """`openapi_extra=` documenting both accepted bodies (the routes parse them, see app.inputs)."""
    form = options.model_json_schema()
    form_properties = {
        name: {"type": "string", "format": "binary", "description": "The photo file."} for name in files
    }
    form_properties.update(form.get("properties", {}))
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": list(files), "properties": form_properties}
                },
                "application/json": {"schema": json_model.model_json_schema()},
            },
        }
    }
