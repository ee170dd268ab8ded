"""Request bodies -> (options, image bytes): multipart uploads and JSON with base64 strings, same field names.

Only these two content types are read; nothing is ever fetched from a URL. Parsing is strict: a field sent
twice or a JSON `true` where a number is expected is a 422 that names the field, never a silent guess.
An image part without a filename (`curl -F 'image=<a.jpg'`, a generated client's `File` without
`file_name`) is still the image: the field name says what it is. In a form, an optional field given as
`null`, `None` or nothing means "not given" (form fields are text; that is how clients spell a null there).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import Counter
from collections.abc import AsyncGenerator
from tempfile import SpooledTemporaryFile
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from app.errors import InvalidRequestError, NotAcceptableError, TooLargeError, UnsupportedMediaTypeError
from model.validation import error_lines

OptionsT = TypeVar("OptionsT", bound=BaseModel)

_DATA_URL_PREFIX = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)
_MAX_FORM_FIELDS = 8
_MAX_FORM_FIELD_BYTES = 1024
_FORM_NULLS = frozenset({"", "null", "none"})
# How a region-map PNG may be labelled, preferred first: generated clients read application/octet-stream.
PNG_MEDIA_TYPES = ("image/png", "application/octet-stream")


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
    options = _validate(options_type, payload, strict=True)
    missing = [name for name, value in encoded.items() if value is None]
    if missing:
        raise InvalidRequestError(f"missing field(s) {_names(tuple(missing))}: base64 image string(s)")
    images = {name: _decode_base64(name, value, max_image_bytes) for name, value in encoded.items()}
    return options, images


async def _read_multipart(
    request: Request, options_type: type[OptionsT], image_fields: tuple[str, ...], max_image_bytes: int
) -> tuple[OptionsT, dict[str, bytes]]:
    parser = _FormParser(request.headers, request.stream(), image_fields)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidRequestError(f"malformed multipart body: {exc.message}") from exc
    try:
        files = {key: value for key, value in form.items() if isinstance(value, UploadFile)}
        fields = {key: value for key, value in form.items() if not isinstance(value, UploadFile)}
        unexpected = sorted(set(files) - set(image_fields))
        if unexpected:
            raise InvalidRequestError(
                f"unexpected file field(s) {_names(tuple(unexpected))}; expected {_names(image_fields)}"
            )
        missing = [name for name in image_fields if name not in files]
        if missing:
            raise InvalidRequestError(f"missing file field(s) {_names(tuple(missing))}")
        options = _validate(options_type, _form_nulls(options_type, fields))
        images = {}
        for name in image_fields:
            upload = files[name]
            if upload.size is not None and upload.size > max_image_bytes:
                raise TooLargeError(f"{name} is {upload.size} bytes, the limit is {max_image_bytes} bytes")
            images[name] = await upload.read()
        return options, images
    finally:
        await form.close()


class _FormParser(MultiPartParser):
    """Starlette's multipart parser, with limits for these routes and errors that name the field."""

    def __init__(
        self, headers: Headers, stream: AsyncGenerator[bytes, None], image_fields: tuple[str, ...]
    ) -> None:
        super().__init__(
            headers,
            stream,
            max_files=len(image_fields) + 1,  # one more, so that a repeated file gets its own message
            max_fields=_MAX_FORM_FIELDS,
            max_part_size=_MAX_FORM_FIELD_BYTES,
        )
        self.image_fields = image_fields
        self._seen: set[str] = set()

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        part = self._current_part
        if part.field_name in self._seen:  # which copy should count is a guess: refuse
            raise MultiPartException(f"field '{part.field_name}' sent more than once")
        self._seen.add(part.field_name)
        if part.file is None and part.field_name in self.image_fields:
            # No filename (curl -F 'image=<a.jpg', httpx for an empty or missing filename): still the image.
            self._current_fields -= 1
            self._current_files += 1
            spool = SpooledTemporaryFile(max_size=self.spool_max_size)  # noqa: SIM115 (closed with the form)
            self._files_to_close_on_error.append(spool)
            part.file = UploadFile(file=spool, size=0, headers=Headers(raw=part.item_headers))  # type: ignore[arg-type]

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._current_part
        if part.file is None and len(part.data) + end - start > self.max_part_size:
            raise MultiPartException(f"field '{part.field_name}' is longer than {self.max_part_size} bytes")
        super().on_part_data(data, start, end)


def _form_nulls(options_type: type[BaseModel], fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` without the null spellings (`null`, `None`, empty) of the fields whose default is None."""
    nullable = {name for name, field in options_type.model_fields.items() if field.default is None}
    return {
        name: value
        for name, value in fields.items()
        if not (name in nullable and isinstance(value, str) and value.strip().lower() in _FORM_NULLS)
    }


def png_media_type(request: Request, format_field: str, explicit: bool) -> str | None:
    """The media type of a region-map answer that is a PNG, or None for JSON.

    The `/png` route always answers the PNG: as image/png, or as application/octet-stream (the same bytes) for
    a client whose `Accept` admits only that; an explicit `format=json` there is a 422, an `Accept` that
    admits neither a 406. Elsewhere `format=png` gives the PNG unless `Accept` rules it out: then JSON.
    """
    accept = request.headers.get("accept") or "*/*"
    media_type = next((kind for kind in PNG_MEDIA_TYPES if accepts(accept, kind)), None)
    if request.url.path.rstrip("/").endswith("/png"):
        if explicit and format_field != "png":
            raise InvalidRequestError(f"format={format_field} on the PNG route: leave format out")
        if media_type is None:
            raise NotAcceptableError(f"this route answers image/png; the request accepts only {accept}")
        return media_type
    return media_type if format_field == "png" else None


def accepts(accept: str, media_type: str) -> bool:
    """Whether an `Accept` header admits `media_type` (a range that matches it with q > 0)."""
    main = media_type.split("/")[0]
    for item in accept.split(","):
        media_range, *params = (piece.strip() for piece in item.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0 and media_range.lower() in (media_type, f"{main}/*", "*/*"):
            return True
    return False


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(payload, dict):
        raise ValueError("expected a JSON object")
    return payload


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    repeated = sorted(name for name, count in Counter(name for name, _ in pairs).items() if count > 1)
    if repeated:
        raise ValueError(f"field(s) {_names(tuple(repeated))} sent more than once")
    return dict(pairs)


def _validate(options_type: type[OptionsT], values: dict[str, Any], strict: bool = False) -> OptionsT:
    """Options from form strings (lax: "true", "0.5") or JSON values (strict: no true for a number)."""
    try:
        return options_type.model_validate(values, strict=strict)
    except ValidationError as exc:
        raise InvalidRequestError("; ".join(error_lines(exc.errors()[:5], empty_location="body"))) from exc


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
