"""Pydantic validation errors as short human lines: the one formatting of `ValidationError` in the project.

Used by the service (request bodies and options: `app/errors.py`, `app/inputs.py`) and the training config
(`training/config.py`); each decides only how the lines are joined.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any


def error_lines(
    errors: Sequence[Mapping[str, Any]],
    *,
    drop: Collection[str] = (),
    empty_location: str | None = None,
    messages: Mapping[str, str] | None = None,
) -> list[str]:
    """`location: message` for each error of `ValidationError.errors()` (or FastAPI's, the same shape).

    drop: location parts left out (FastAPI's leading "body"); empty_location: the location written when
    none is left (None: the message alone); messages: replacements by error type, e.g.
    {"extra_forbidden": "unknown field"}.
    """
    lines = []
    for error in errors:
        location = ".".join(str(part) for part in error.get("loc", ()) if part not in drop) or empty_location
        message = (messages or {}).get(error.get("type", ""), error.get("msg", "invalid"))
        lines.append(f"{location}: {message}" if location else str(message))
    return lines
