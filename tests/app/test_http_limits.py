"""HTTP-level limits of a real `drface serve` process, driven over raw sockets on 127.0.0.1.

Dropped uploads, header size and read time, body read time, the connection cap, the bytes held by unfinished
uploads, HEAD probes and a quiet start-up: behaviours of the server process, so no in-process client.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from service_testkit import uvicorn_server

pytestmark = [pytest.mark.data, pytest.mark.slow]

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 8.0
MAX_CONNECTIONS = 8
MAX_HEADER_BYTES = 16 * 1024
MAX_UPLOAD_BYTES = 1024 * 1024
MAX_BUFFERED_BYTES = 3 * 1024 * 1024  # two stalled ~1.4 MB uploads fit, a third does not
WAIT_S = 30.0  # generous bound for the server to get to something; never a pass/fail timing


@dataclass
class Server:
    url: str
    host: str
    port: int
    log_path: Path
    startup_log: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cfp_root: Path) -> Iterator[Server]:
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    settings = {
        "DRFACE_TORCH_THREADS": "1",
        "DRFACE_LOG_LEVEL": "info",
        "DRFACE_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "DRFACE_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "DRFACE_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "DRFACE_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
        "DRFACE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
        "DRFACE_MAX_BUFFERED_BYTES": str(MAX_BUFFERED_BYTES),
        # A home nobody can write to, like the container's read-only root: onnxruntime's telemetry would warn.
        "HOME": "/proc",
        "XDG_CACHE_HOME": "/proc/no-cache",
    }
    with uvicorn_server(log_path=log_path, **settings) as url:
        host, port = url.removeprefix("http://").split(":")
        yield Server(url, host, int(port), log_path, log_path.read_text())


# -- raw HTTP helpers --------------------------------------------------------------------------------------
def connect(server: Server) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=WAIT_S)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def assert_error(raw: bytes, status: int, code: str) -> dict[str, str]:
    got_status, headers, body = parse_response(raw)
    assert got_status == status, raw[:300]
    assert json.loads(body) == {"error": {"code": code, "message": json.loads(body)["error"]["message"]}}
    assert json.loads(body)["error"]["message"]
    return headers


def upload_head(declared_bytes: int) -> bytes:
    """Request line, headers and the start of a multipart image part that claims `declared_bytes`."""
    return (
        b"POST /v1/embed HTTP/1.1\r\nHost: test\r\n"
        b"Content-Type: multipart/form-data; boundary=XyZ\r\n"
        + f"Content-Length: {declared_bytes}\r\n\r\n".encode()
        + b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + b"\xff" * 32 * 1024
    )


def metric(server: Server, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    text = httpx.get(f"{server.url}/metrics").text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and all(f'{key}="{value}"' in (match.group(1) or "") for key, value in labels.items()):
            total += float(match.group(2))
    return total


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"waited {WAIT_S} s for {what}"
        time.sleep(0.05)


def log_since(server: Server, offset: int) -> str:
    return server.log_path.read_text()[offset:]


# -- tests -----------------------------------------------------------------------------------------------
def test_start_up_prints_no_warning(server: Server) -> None:
    assert "warn" not in server.startup_log.lower(), server.startup_log
    assert "telemetry" not in server.startup_log.lower()


def test_health_routes_answer_head(server: Server) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        response = httpx.head(f"{server.url}{path}")
        assert response.status_code == 200, path
        assert response.content == b""


def test_dropped_uploads_are_499_with_one_short_log_line_each(server: Server) -> None:
    dropped = 20
    before = metric(server, "drface_http_requests_total", route="/v1/embed", status="499")
    errors_before = metric(server, "drface_http_requests_total", status="500")
    offset = len(server.log_path.read_text())
    for _ in range(dropped):
        with connect(server) as sock:
            sock.sendall(upload_head(declared_bytes=100_000))  # then the client goes away mid-upload
    wait_for(
        lambda: (
            metric(server, "drface_http_requests_total", route="/v1/embed", status="499") >= before + dropped
        ),
        "the dropped uploads to be counted",
    )
    assert metric(server, "drface_http_requests_total", status="500") == errors_before
    log = log_since(server, offset)
    assert "Traceback" not in log and "ERROR" not in log
    upload_lines = [line for line in log.splitlines() if "/v1/embed" in line]
    assert len(upload_lines) == dropped, upload_lines[:5]
    assert all(len(line) < 200 for line in upload_lines)
    assert httpx.get(f"{server.url}/readyz").status_code == 200


@pytest.mark.parametrize("header_bytes", [64 * 1024, 1024 * 1024])
def test_oversized_headers_get_431(server: Server, header_bytes: int) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * header_bytes + b"\r\n\r\n"
    with connect(server) as sock:
        # The server may answer and stop reading before the client has sent everything.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        raw = read_until_closed(sock)
    assert_error(raw, 431, "headers_too_large")
    assert httpx.get(f"{server.url}/readyz").status_code == 200


def test_a_malformed_chunked_body_gets_400_and_no_traceback(server: Server) -> None:
    offset = len(server.log_path.read_text())
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/embed HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\nzz\r\n'  # "zz" is no chunk size
        )
        raw = read_until_closed(sock)
    assert_error(raw, 400, "invalid_request")
    wait_for(lambda: "/v1/embed" in log_since(server, offset), "the request to be logged")
    assert "Traceback" not in log_since(server, offset)
    assert httpx.get(f"{server.url}/readyz").status_code == 200


def test_headers_sent_too_slowly_get_408(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        sock.settimeout(0.25)
        raw = b""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                sock.sendall(b"X-Slow: 1\r\n")  # a header line every 0.25 s, never the blank line
                raw = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            break
        sock.settimeout(WAIT_S)
        raw += read_until_closed(sock)
    assert_error(raw, 408, "request_timeout")


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    with connect(server) as sock:
        assert read_until_closed(sock) == b""


def test_body_sent_too_slowly_gets_408(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(upload_head(declared_bytes=200_000))
        sock.settimeout(0.25)
        raw = b""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and not raw:
            try:
                sock.sendall(b"\x00")  # one byte at a time: never done
                raw = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(WAIT_S)
        raw += read_until_closed(sock)
    headers = assert_error(raw, 408, "request_timeout")
    assert headers["connection"] == "close"


def test_connections_beyond_the_cap_get_429(server: Server) -> None:
    sockets = [connect(server) for _ in range(MAX_CONNECTIONS + 4)]
    try:
        answers = [
            read_until_closed(sock) for sock in sockets
        ]  # refused ones at once, the rest at the timeout
    finally:
        for sock in sockets:
            sock.close()
    refused = [raw for raw in answers if raw]
    assert len(refused) >= 4 and len(answers) - len(refused) <= MAX_CONNECTIONS
    for raw in refused:
        headers = assert_error(raw, 429, "overloaded")
        assert int(headers["retry-after"]) >= 0
    assert httpx.get(f"{server.url}/readyz").status_code == 200


def test_bytes_held_by_unfinished_uploads_are_bounded(server: Server, face_a: bytes) -> None:
    held = "drface_request_body_bytes_held"
    stalled = [connect(server) for _ in range(2)]
    try:
        for sock in stalled:  # 2 x 1.3 MB sent of 1.4 MB declared, then nothing: 2.6 MB of the 3 MiB held
            sock.sendall(upload_head(declared_bytes=1_400_000) + b"\xff" * (1_300_000 - 32 * 1024))
        wait_for(lambda: metric(server, held) >= 2_500_000, "the two stalled uploads to be read")
        with connect(
            server
        ) as sock:  # its declared 1 MB does not fit in what is left: refused before reading
            sock.sendall(upload_head(declared_bytes=1_000_000))
            headers = assert_error(read_until_closed(sock), 429, "overloaded")
        assert "retry-after" in headers
    finally:
        for sock in stalled:
            sock.close()
    wait_for(lambda: metric(server, held) == 0, "the stalled uploads' bytes to be released")
    response = httpx.post(
        f"{server.url}/v1/embed", files={"image": ("a.jpg", face_a, "image/jpeg")}, timeout=60
    )
    assert response.status_code == 200, response.text


def test_uploads_that_declare_much_and_send_little_do_not_hold_the_budget(
    server: Server, face_a: bytes
) -> None:
    declared = (1_450_000, 1_450_000, 240_000)  # together just under the 3 MiB budget: no photo would fit
    stalled = [connect(server) for _ in declared]
    try:
        for sock, size in zip(stalled, declared, strict=True):
            sock.sendall(upload_head(declared_bytes=size))  # 32 KiB of it, then nothing
        wait_for(
            lambda: metric(server, "drface_request_body_bytes_held") >= 3 * 32 * 1024,
            "the uploads to be read",
        )
        response = httpx.post(
            f"{server.url}/v1/embed", files={"image": ("a.jpg", face_a, "image/jpeg")}, timeout=60
        )
        assert response.status_code == 200, response.text
    finally:
        for sock in stalled:
            sock.close()
