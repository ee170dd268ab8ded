"""Helpers of the service tests: CFP photos as test images, an in-process app and a real uvicorn server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import uvicorn
from fastapi.testclient import TestClient

from app.http_protocol import GuardedH11Protocol
from app.main import create_app
from app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 90.0
# CFP frontal photos whose face the detector finds with a score > 0.99 (checked by test_api).
PERSON_A = "001/frontal/01.jpg"
PERSON_B = "002/frontal/01.jpg"
KEYED_SERVER_KEY = "contract-test-key"  # the API key of conftest's keyed_server_url
PHOTO_SIDE = 250  # the load test's and these tests' photo size, like the LFW-style crops


def cfp_photo(cfp_root: Path, relative: str) -> bytes:
    return (cfp_root / "Data" / "Images" / relative).read_bytes()


def square_photo(data: bytes, side: int = PHOTO_SIDE) -> np.ndarray:
    """Decode a photo and fit it into a side x side BGR canvas (aspect kept, grey border)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    scale = side / max(image.shape[:2])
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
    canvas = np.full((side, side, 3), 127, dtype=np.uint8)
    top, left = (side - resized.shape[0]) // 2, (side - resized.shape[1]) // 2
    canvas[top : top + resized.shape[0], left : left + resized.shape[1]] = resized
    return canvas


def jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return encoded.tobytes()


def png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def aligned_crop(seed: int) -> bytes:
    """A 112x112 PNG to send with `aligned=true`: blocky noise, its own embedding for each seed."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (14, 14, 3), dtype=np.uint8)
    return png(np.kron(small, np.ones((8, 8, 1), dtype=np.uint8)))


def wait_ready(get: Callable[[str], httpx.Response], timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll /readyz until 200; fail with the last answer after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = get("/readyz")
            if last.status_code == 200:
                return
            health = get("/healthz")
            if health.status_code != 200:  # the model failed to load: waiting will not help
                raise AssertionError(f"server unhealthy: {health.text}")
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"server not ready after {timeout_s} s: {last!r}")


def make_settings(**overrides: object) -> Settings:
    """Settings for tests: independent of the caller's DRFACE_* environment, one warm-up run, 1 thread,
    a fresh gallery in a temporary folder."""
    values: dict[str, object] = {
        "warmup_runs": 1,
        "torch_threads": 1,
        "api_keys": "",
        "gallery_url": "",
        "state_dir": tempfile.mkdtemp(prefix="drface-state-"),
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def running_app(**overrides: object) -> Iterator[TestClient]:
    """An in-process app (lifespan started, model ready) and its TestClient."""
    app = create_app(make_settings(**overrides))
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client.get)
        yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(log: Any = None, **env: str) -> tuple[subprocess.Popen, str]:
    """Start `drface serve` on a free loopback port with these `DRFACE_*` variables (a fresh gallery unless
    DRFACE_STATE_DIR or DRFACE_GALLERY_URL is given); returns the process and its base URL once ready."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DRFACE_")}
    environment.update({"DRFACE_LOG_LEVEL": "warning", "DRFACE_WARMUP_RUNS": "1", **env})
    environment.setdefault("DRFACE_STATE_DIR", tempfile.mkdtemp(prefix="drface-state-"))
    command = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=log, stderr=log)
    base_url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base_url, timeout=10) as client:

            def get(path: str) -> httpx.Response:
                if process.poll() is not None:
                    raise AssertionError(f"server exited with code {process.returncode}")
                return client.get(path)

            wait_ready(get)
    except BaseException:
        stop_server(process)
        raise
    return process, base_url


def stop_server(process: subprocess.Popen) -> None:
    """Ask the server to stop (SIGTERM); kill it if it has not within 15 s."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def uvicorn_server(log_path: Path | None = None, **env: str) -> Iterator[str]:
    """`drface serve` in a subprocess on a free loopback port; yields its base URL once /readyz is 200.

    With `log_path`, the server's stdout and stderr go to that file.
    """
    log = open(log_path, "wb") if log_path is not None else None  # noqa: SIM115 (closed below)
    try:
        process, base_url = start_server(log, **env)
        try:
            yield base_url
        finally:
            stop_server(process)
    finally:
        if log is not None:
            log.close()


@contextmanager
def threaded_server(app: Any) -> Iterator[str]:
    """`app` served by uvicorn with the protocol of `drface serve`, in a thread here; yields its URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=GuardedH11Protocol, log_config=None, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            wait_ready(client.get)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
