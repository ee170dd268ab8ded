"""Soak and fault run: a real `drface serve` on loopback under good, bad and hostile traffic for N seconds.

Runs at once, until the deadline:
  * valid clients: `/v1/embed` and `/v1/verify` with CFP photos, one request after another;
  * bad requests: corrupt and non-image files, broken / deeply nested / duplicate-key JSON, `threshold: true`,
    duplicate form fields, a file part without a filename, thin-strip images, a 64 KiB header, HEAD probes;
  * aborted uploads: a request's headers and part of its body, then the client goes away;
  * slow clients: headers a line at a time (slowloris) and a body a byte a second, never finished;
  * overload: every few seconds a burst of concurrent embeds (more than the queue holds) and of ~10 MiB JSON
    uploads (more than the upload byte budget holds);
  * a monitor: `/readyz` and the server's RSS twice a second.

Reports answers by class (2xx / 4xx / 5xx, and requests that got no answer by design: the aborted ones),
p50 / p99 latency of the valid requests, RSS at start, end and peak, server log lines per request, and
whether `/readyz` stayed 200. The server runs with its default settings unless `--server-env` says otherwise.

    python benchmarks/soak.py --seconds 90 --out docs/soak.md
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import httpx
import numpy as np
from load_test import cfp_photos, start_server

REPO_ROOT = Path(__file__).resolve().parents[1]
MONITOR_PERIOD_S = 0.5
BURST_PERIOD_S = 10.0
OVERLOAD_BURST = 48  # concurrent embeds per burst: more than the default queue (32) and slot (1) hold
BIG_UPLOADS_PER_BURST = 24  # ~10 MiB JSON each: more than the default 128 MiB upload budget holds
SLOW_CLIENTS = 4


@dataclass
class Tally:
    """What the clients saw; shared by the client threads (one lock)."""

    statuses: Counter = field(default_factory=Counter)
    by_kind: dict[str, Counter] = field(default_factory=dict)
    valid_ms: list[float] = field(default_factory=list)
    aborted: int = 0
    ready_checks: int = 0
    ready_ok: int = 0
    rss_mb: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, status: int | str, latency_ms: float | None = None) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.by_kind.setdefault(kind, Counter())[status] += 1
            if latency_ms is not None:
                self.valid_ms.append(latency_ms)


# -- the server ---------------------------------------------------------------------------------------------
def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- traffic ---------------------------------------------------------------------------------------------
def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def bad_requests(photo: bytes) -> list[tuple[str, str, dict]]:
    """(name, method + path, httpx arguments) of requests that must each get a 4xx."""
    b64 = base64.b64encode(photo).decode()
    nested = b"[" * 50_000 + b"]" * 50_000
    strip = png(np.full((1, 40000, 3), 90, np.uint8))
    json_type = {"content-type": "application/json"}
    return [
        ("truncated_jpeg", "POST /v1/embed", {"files": {"image": ("a.jpg", photo[: len(photo) // 3])}}),
        ("text_file", "POST /v1/embed", {"files": {"image": ("a.txt", b"not a photo\n" * 20)}}),
        ("broken_json", "POST /v1/embed", {"content": b'{"image": ', "headers": json_type}),
        ("nested_json", "POST /v1/embed", {"content": nested, "headers": json_type}),
        ("threshold_true", "POST /v1/verify", {"json": {"image1": b64, "image2": b64, "threshold": True}}),
        (
            "duplicate_field",
            "POST /v1/embed",
            {"files": [("image", ("a.jpg", photo)), ("aligned", (None, b"0")), ("aligned", (None, b"1"))]},
        ),
        ("file_without_filename", "POST /v1/embed", {"files": {"image": ("", photo, "image/jpeg")}}),
        ("thin_strip", "POST /v1/embed", {"files": {"image": ("s.png", strip)}}),
        ("big_header", "GET /healthz", {"headers": {"x-big": "a" * 64 * 1024}}),
        ("unknown_route", "GET /v2/nothing", {}),
        (
            "plain_text_body",
            "POST /v1/verify",
            {"content": b"hello", "headers": {"content-type": "text/plain"}},
        ),
    ]


def valid_client(url: str, photos: list[bytes], tally: Tally, deadline: float, seed: int) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        i = seed
        while time.monotonic() < deadline:
            first, second = photos[i % len(photos)], photos[(i * 7 + 3) % len(photos)]
            if i % 3:
                path, files = "/v1/embed", {"image": ("a.jpg", first, "image/jpeg")}
            else:
                path = "/v1/verify"
                files = {"image1": ("a.jpg", first, "image/jpeg"), "image2": ("b.jpg", second, "image/jpeg")}
            start = time.perf_counter()
            try:
                response = http.post(path, files=files)
                latency = (time.perf_counter() - start) * 1000
                tally.add("valid", response.status_code, latency if response.status_code == 200 else None)
            except httpx.TransportError as exc:
                tally.add("valid", type(exc).__name__)
            i += 1


def bad_client(url: str, photo: bytes, tally: Tally, deadline: float) -> None:
    cases = bad_requests(photo)
    i = 0
    while time.monotonic() < deadline:
        name, route, arguments = cases[i % len(cases)]
        method, path = route.split()
        try:
            response = httpx.request(method, f"{url}{path}", timeout=30, **arguments)
            tally.add(f"bad:{name}", response.status_code)
        except httpx.TransportError as exc:
            tally.add(f"bad:{name}", type(exc).__name__)
        for probe in ("/healthz", "/readyz", "/metrics"):
            tally.add("head", httpx.head(f"{url}{probe}", timeout=30).status_code)
        i += 1
        time.sleep(0.05)


def upload_head(host: str, declared: int) -> bytes:
    return (
        f"POST /v1/embed HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {declared}\r\n\r\n"
        '--XyZ\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
    ).encode() + b"\xff" * 64 * 1024


def aborting_client(address: tuple[str, int], tally: Tally, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(address, timeout=10) as sock:
                sock.sendall(upload_head(address[0], declared=2_000_000))
            with tally.lock:
                tally.aborted += 1
        except OSError as exc:
            tally.add("aborted", type(exc).__name__)
        time.sleep(0.02)


def slow_client(address: tuple[str, int], tally: Tally, deadline: float, slow_body: bool) -> None:
    """Send a byte or a header line every second, never finishing; count the server's answer."""
    kind = "slow_body" if slow_body else "slow_headers"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(address, timeout=1.0) as sock:
                sock.sendall(upload_head(address[0], 200_000) if slow_body else b"GET /healthz HTTP/1.1\r\n")
                answer = b""
                while time.monotonic() < deadline and not answer:
                    try:
                        sock.sendall(b"\x00" if slow_body else b"X-Slow: 1\r\n")
                        answer = sock.recv(4096)
                    except TimeoutError:
                        continue
                if answer:
                    tally.add(kind, int(answer.split()[1]))
        except (OSError, IndexError, ValueError) as exc:
            tally.add(kind, type(exc).__name__)


def burst_client(url: str, photo: bytes, tally: Tally, deadline: float) -> None:
    """Every BURST_PERIOD_S: many concurrent embeds, then many ~10 MiB JSON uploads."""
    big = json.dumps({"image": base64.b64encode(os.urandom(7 * 1024 * 1024)).decode()}).encode()

    def one(kind: str, arguments: dict) -> None:
        try:
            response = httpx.post(f"{url}/v1/embed", timeout=120, **arguments)
            tally.add(kind, response.status_code)
        except httpx.TransportError as exc:
            tally.add(kind, type(exc).__name__)

    embed = {"files": {"image": ("a.jpg", photo, "image/jpeg")}}
    upload = {"content": big, "headers": {"content-type": "application/json"}}
    with ThreadPoolExecutor(max_workers=OVERLOAD_BURST) as pool:
        while time.monotonic() + BURST_PERIOD_S < deadline:
            time.sleep(BURST_PERIOD_S / 2)
            list(pool.map(lambda _: one("overload", embed), range(OVERLOAD_BURST)))
            time.sleep(BURST_PERIOD_S / 2)
            list(pool.map(lambda _: one("big_upload", upload), range(BIG_UPLOADS_PER_BURST)))


def monitor(url: str, pid: int, tally: Tally, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            ok = httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            ok = False
        with tally.lock:
            tally.ready_checks += 1
            tally.ready_ok += ok
            tally.rss_mb.append(rss_mb(pid))
        time.sleep(MONITOR_PERIOD_S)


# -- report ------------------------------------------------------------------------------------------------
def status_class(status: int | str) -> str:
    return f"{str(status)[0]}xx" if isinstance(status, int) else "no answer"


def rss_by_tenth(tally: Tally) -> list[float]:
    """The largest RSS sample in each tenth of the run: flat once the allocator has its working set."""
    return [float(max(part)) for part in np.array_split(np.array(tally.rss_mb), 10) if len(part)]


def report(tally: Tally, seconds: float, rss_start: float, rss_end: float, log_lines: int) -> str:
    classes = Counter()
    for status, count in tally.statuses.items():
        classes[status_class(status)] += count
    answered = sum(tally.statuses.values())
    requests = answered + tally.aborted
    p50, p99 = np.percentile(tally.valid_ms, [50, 99]) if tally.valid_ms else (float("nan"),) * 2
    lines = [
        f"| run | {seconds:.0f} s on loopback, load average at the end {os.getloadavg()[0]:.2f} |",
        "| --- | --- |",
        f"| requests | {requests} ({answered} answered, {tally.aborted} aborted by the client on purpose) |",
        f"| answers | 2xx {classes['2xx']}, 4xx {classes['4xx']}, **5xx {classes['5xx']}**, "
        f"no answer {classes['no answer']} |",
        f"| valid requests, latency | p50 {p50:.0f} ms, p99 {p99:.0f} ms ({len(tally.valid_ms)} of them) |",
        f"| server RSS | start {rss_start:.0f} MB, end {rss_end:.0f} MB, peak {max(tally.rss_mb):.0f} MB |",
        f"| RSS, max of each tenth of the run | {' '.join(f'{mb:.0f}' for mb in rss_by_tenth(tally))} MB |",
        f"| server log | {log_lines} lines, {log_lines / max(requests, 1):.2f} per request |",
        f"| `/readyz` | {tally.ready_ok} of {tally.ready_checks} checks ready |",
        "",
        "| traffic | answers |",
        "| --- | --- |",
    ]
    for kind in sorted(tally.by_kind):
        answers = ", ".join(
            f"{status}: {count}" for status, count in sorted(tally.by_kind[kind].items(), key=str)
        )
        lines.append(f"| {kind} | {answers} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_root = os.environ.get("DRFACE_DATA_ROOT", str(REPO_ROOT.parent / "shared" / "data"))
    parser.add_argument("--seconds", type=float, default=90.0, help="length of the run")
    parser.add_argument("--data-root", type=Path, default=Path(default_root), help="folder holding cfp/")
    parser.add_argument("--valid-clients", type=int, default=2)
    parser.add_argument("--server-env", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--log", type=Path, default=Path("soak-server.log"), help="server log file")
    parser.add_argument("--out", type=Path, help="also write the report (markdown) here")
    args = parser.parse_args(argv)

    photos = cfp_photos(args.data_root, 20)
    env = dict(item.split("=", 1) for item in args.server_env)
    # the service's own log level: the soak counts the log lines a run writes
    process, url = start_server(env, args.log, inherit_settings=False, ready_timeout_s=180, log_level=None)
    address = ("127.0.0.1", int(url.rsplit(":", 1)[1]))
    try:
        for _ in range(3):  # the first requests allocate the pipeline's buffers: measure from after them
            httpx.post(f"{url}/v1/embed", files={"image": ("a.jpg", photos[0], "image/jpeg")}, timeout=60)
        rss_start = rss_mb(process.pid)
        log_start = len(args.log.read_bytes().splitlines())
        tally = Tally()
        deadline = time.monotonic() + args.seconds
        jobs = [
            *(lambda i=i: valid_client(url, photos, tally, deadline, i) for i in range(args.valid_clients)),
            lambda: bad_client(url, photos[1], tally, deadline),
            lambda: aborting_client(address, tally, deadline),
            *(lambda i=i: slow_client(address, tally, deadline, i % 2 == 1) for i in range(SLOW_CLIENTS)),
            lambda: burst_client(url, photos[2], tally, deadline),
            lambda: monitor(url, process.pid, tally, deadline),
        ]
        threads = [threading.Thread(target=job, daemon=True) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(2.0)  # let the server finish what is in flight
        rss_end = rss_mb(process.pid)
        log_lines = len(args.log.read_bytes().splitlines()) - log_start
    finally:
        process.terminate()
        process.wait(timeout=30)
    text = report(tally, args.seconds, rss_start, rss_end, log_lines)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
