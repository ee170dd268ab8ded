"""Fixtures of the service tests: CFP photos, an in-process app factory and a real uvicorn server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_testkit import (
    KEYED_SERVER_KEY,
    PERSON_A,
    PERSON_B,
    cfp_photo,
    jpeg,
    running_app,
    square_photo,
    uvicorn_server,
)
from throwaway_postgres import PostgresUnavailable, fresh_database, throwaway_postgres


@pytest.fixture(scope="session")
def face_a(cfp_root: Path) -> bytes:
    """250x250 JPEG of person A."""
    return jpeg(square_photo(cfp_photo(cfp_root, PERSON_A)))


@pytest.fixture(scope="session")
def face_a_bgr(face_a: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(face_a, np.uint8), cv2.IMREAD_COLOR)


@pytest.fixture(scope="session")
def face_b(cfp_root: Path) -> bytes:
    """250x250 JPEG of person B."""
    return jpeg(square_photo(cfp_photo(cfp_root, PERSON_B)))


@pytest.fixture(scope="session")
def app_factory() -> Callable[..., AbstractContextManager[TestClient]]:
    """`with app_factory(max_faces=4) as client:` an in-process app with those settings."""
    return running_app


@pytest.fixture(scope="session")
def server_url(cfp_root: Path) -> Iterator[str]:
    """Base URL of one real uvicorn server shared by the session's server tests."""
    with uvicorn_server(DRFACE_TORCH_THREADS="1") as url:
        yield url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of a throwaway PostgreSQL cluster for the session; skips the test where none can be started."""
    try:
        cluster = throwaway_postgres()
        url = cluster.__enter__()
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL server for the test: {exc}")
    try:
        yield url
    finally:
        cluster.__exit__(None, None, None)


@pytest.fixture(params=["sqlite", "postgresql"])
def gallery_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty gallery database: a SQLite file, and a fresh PostgreSQL database where a server can run."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gallery.sqlite3'}"
    return fresh_database(request.getfixturevalue("postgres_server"))


@pytest.fixture(scope="session")
def keyed_server_url(cfp_root: Path) -> Iterator[str]:
    """Base URL of a real uvicorn server whose one API key is KEYED_SERVER_KEY."""
    with uvicorn_server(DRFACE_TORCH_THREADS="1", DRFACE_API_KEYS=KEYED_SERVER_KEY) as url:
        yield url
