"""Errors of the gallery routes: `ApiError`s, so app.errors' one handler gives them the error shape."""

from __future__ import annotations

from app.errors import ApiError


class SubjectNotFoundError(ApiError):
    status_code, code = 404, "not_found"


class FaceNotFoundError(ApiError):
    status_code, code = 404, "not_found"


class SubjectExistsError(ApiError):
    status_code, code = 409, "conflict"


class NoEnrolledFaceError(ApiError):
    """The subject has no template at all: nothing to compare with."""

    status_code, code = 409, "no_enrolled_face"


class ModelMismatchError(ApiError):
    """The templates were made by another model than the served one: comparing them is meaningless."""

    status_code, code = 409, "model_mismatch"
