"""`drface serve`: run the REST API with uvicorn. Flags override the matching `DRFACE_*` settings."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

from pydantic import ValidationError

from app.settings import Settings

# CLI flag (argparse dest) -> settings field; a given flag is exported as DRFACE_<FIELD> so that every
# worker process sees it.
_FLAG_FIELDS = {
    "host": "host",
    "port": "port",
    "weights": "weights",
    "workers": "workers",
    "threads": "torch_threads",
    "log_level": "log_level",
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of `drface serve`; each defaults to its `DRFACE_*` environment variable, then the built-in."""
    parser.add_argument("--host", help="interface to bind (DRFACE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (DRFACE_PORT, default 8000)")
    parser.add_argument("--weights", help="model artifact .safetensors (DRFACE_WEIGHTS, default: shipped)")
    parser.add_argument("--workers", type=int, help="server processes (DRFACE_WORKERS, default 1)")
    parser.add_argument("--threads", type=int, help="torch threads per process (DRFACE_TORCH_THREADS)")
    parser.add_argument(
        "--log-level", choices=["critical", "error", "warning", "info", "debug"], help="DRFACE_LOG_LEVEL"
    )


def run(args: argparse.Namespace) -> int:
    """Validate settings and the model artifact, then serve until interrupted; returns the exit code."""
    import uvicorn

    for flag, field in _FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            os.environ[f"DRFACE_{field.upper()}"] = str(value)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"drface serve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    problem = _check_artifact(settings)
    if problem:
        print(f"drface serve: {problem}", file=sys.stderr)
        return 2
    warning = exposure_warning(settings)
    if warning:
        print(f"drface serve: WARNING: {warning}", file=sys.stderr)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    uvicorn.run(
        "app.main:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
        # h11 (not httptools): it bounds the header block; our subclass adds the timeouts and the cap.
        http="app.http_protocol:GuardedH11Protocol",
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
    return 0


def is_loopback(host: str) -> bool:
    """True for an address or name that only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other host name may resolve to a reachable interface


def exposure_warning(settings: Settings) -> str | None:
    """A warning when the API needs no key and listens beyond loopback, else None."""
    if settings.api_keys or is_loopback(settings.host):
        return None
    return (
        f"API keys are off (DRFACE_API_KEYS is empty) and the server listens on "
        f"{settings.host}:{settings.port}: anyone who can reach that address can use /v1. Set "
        "DRFACE_API_KEYS before exposing it; in a container, publish the port on 127.0.0.1 only (the "
        "docker-compose.yml default) until then."
    )


def _check_artifact(settings: Settings) -> str | None:
    """A message when the model artifact cannot be used (missing file or unreadable card), else None."""
    from model.artifact import DEFAULT_WEIGHTS, ArtifactError, artifact_paths, load_card

    weights, _ = artifact_paths(settings.weights or DEFAULT_WEIGHTS)
    if not weights.is_file():
        return f"model weights not found: {weights} (set --weights or DRFACE_WEIGHTS)"
    try:
        load_card(weights)
    except ArtifactError as exc:
        return str(exc)
    return None
