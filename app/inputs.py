"""Request bodies -> (options, image bytes): multipart uploads and JSON with base64 strings, same field names.

Only these two content types are read; nothing is ever fetched from a URL.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from app.errors import InvalidRequestError, TooLargeError, UnsupportedMediaTypeError

OptionsT = TypeVar("OptionsT", bound=BaseModel)

_DATA_URL_PREFIX = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)
_MAX_FORM_FIELDS = 8
_MAX_FORM_FIELD_BYTES = 1024


async def read_request(
    request: Request, options_type: type[OptionsT], image_fields: tuple[str, ...], max_image_bytes: int
) -> tuple[OptionsT, dict[str, bytes]]:
    """Parse a multipart or JSON body into validated options and the raw bytes of each image field.

    Raises UnsupportedMediaTypeError (415), InvalidRequestError (422) or TooLargeError (413).
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _read_multipart(request, options_type, image_fields, max_image_bytes)
    if content_type == "application/json" or content_type.endswith("+json"):
        return await _read_json(request, options_type, image_fields, max_image_bytes)
    if not content_type and not await request.body():
        raise InvalidRequestError(_empty_body_message(image_fields))
    raise UnsupportedMediaTypeError(
        f"Content-Type {content_type or '(none)'} is not accepted: send multipart/form-data with file "
        f"field(s) {_names(image_fields)}, or application/json with base64 string(s) {_names(image_fields)}"
    )


async def _read_json(
    request: Request, options_type: type[OptionsT], image_fields: tuple[str, ...], max_image_bytes: int
) -> tuple[OptionsT, dict[str, bytes]]:
    body = await request.body()
    if not body.strip():
        raise InvalidRequestError(_empty_body_message(image_fields))
    try:
        payload = _json_object(body)
    except ValueError as exc:
        raise InvalidRequestError(f"body is not valid JSON: {exc}") from exc
    encoded = {name: payload.pop(name, None) for name in image_fields}
    options = _validate(options_type, payload)
    missing = [name for name, value in encoded.items() if value is None]
    if missing:
        raise InvalidRequestError(f"missing field(s) {_names(tuple(missing))}: base64 image string(s)")
    images = {name: _decode_base64(name, value, max_image_bytes) for name, value in encoded.items()}
    return options, images


async def _read_multipart(
    request: Request, options_type: type[OptionsT], image_fields: tuple[str, ...], max_image_bytes: int
) -> tuple[OptionsT, dict[str, bytes]]:
    try:
        form = await request.form(
            max_files=len(image_fields), max_fields=_MAX_FORM_FIELDS, max_part_size=_MAX_FORM_FIELD_BYTES
        )
    except StarletteHTTPException as exc:
        if exc.status_code == 413:
            raise
        raise InvalidRequestError(f"malformed multipart body: {exc.detail}") from exc
    try:
        files = {key: value for key, value in form.multi_items() if isinstance(value, UploadFile)}
        fields = {key: value for key, value in form.multi_items() if not isinstance(value, UploadFile)}
        unexpected = sorted(set(files) - set(image_fields))
        if unexpected:
            raise InvalidRequestError(
                f"unexpected file field(s) {_names(tuple(unexpected))}; expected {_names(image_fields)}"
            )
        as_text = sorted(set(fields) & set(image_fields))
        if as_text:
            raise InvalidRequestError(
                f"field(s) {_names(tuple(as_text))} must be file uploads (curl: -F 'image=@photo.jpg')"
            )
        missing = [name for name in image_fields if name not in files]
        if missing:
            raise InvalidRequestError(f"missing file field(s) {_names(tuple(missing))}")
        options = _validate(options_type, fields)
        images = {}
        for name in image_fields:
            upload = files[name]
            if upload.size is not None and upload.size > max_image_bytes:
                raise TooLargeError(f"{name} is {upload.size} bytes, the limit is {max_image_bytes} bytes")
            images[name] = await upload.read()
        return options, images
    finally:
        await form.close()


def _json_object(body: bytes) -> dict[str, Any]:
    payload = json.loads(body)
    if not isinstance(payload, dict):
        raise ValueError("expected a JSON object")
    return payload


def _validate(options_type: type[OptionsT], values: dict[str, Any]) -> OptionsT:
    try:
        return options_type.model_validate(values)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise InvalidRequestError(details) from exc


def _decode_base64(name: str, value: object, max_image_bytes: int) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be a base64 string, got {type(value).__name__}")
    text = "".join(_DATA_URL_PREFIX.sub("", value.strip(), count=1).split())
    if len(text) * 3 // 4 > max_image_bytes + 2:
        raise TooLargeError(
            f"{name} is about {len(text) * 3 // 4} bytes, the limit is {max_image_bytes} bytes"
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError(f"{name} is not valid base64: {exc}") from exc


def _empty_body_message(image_fields: tuple[str, ...]) -> str:
    return f"request body is empty: send {_names(image_fields)} as multipart file(s) or base64 JSON string(s)"


def _names(fields: tuple[str, ...]) -> str:
    return ", ".join(f"'{name}'" for name in fields)
