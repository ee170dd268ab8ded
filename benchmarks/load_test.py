"""Load test of the REST API: a real `drface serve` process on loopback, driven by an async httpx client.

Reports p50 / p95 / p99 latency, requests per second and status codes for `/v1/embed` and `/v1/verify` at
several concurrency levels, with 250x250 CFP photos (fitted into a 250x250 canvas, like LFW-style crops).
`GET /healthz` at concurrency 1 is the baseline measured in the same run (HTTP + framework overhead).
The client shares the machine with the server, so on a small machine it takes CPU from it.

    python benchmarks/load_test.py                     # starts its own server
    python benchmarks/load_test.py --url http://host:8000 --api-key KEY
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
PHOTO_SIDE = 250
TABLE_HEADER = (
    "| endpoint | concurrency | p50 ms | p95 ms | p99 ms | server p50 ms | server CPU ms/request "
    "| requests/s | status codes |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


@dataclass
class Result:
    endpoint: str
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)  # the server's own pipeline time (`time_ms`)
    statuses: Counter = field(default_factory=Counter)
    wall_s: float = 0.0
    cpu_s: float | None = None  # CPU seconds the server process used for the level (when started here)

    def row(self) -> str:
        ok = sorted(self.latencies_ms)
        p50, p95, p99 = (np.percentile(ok, q) if ok else float("nan") for q in (50, 95, 99))
        codes = ", ".join(f"{code}: {count}" for code, count in sorted(self.statuses.items()))
        rate = sum(self.statuses.values()) / self.wall_s if self.wall_s else 0.0
        server = np.median(self.server_ms) if self.server_ms else float("nan")
        answered = sum(self.statuses.values())
        cpu_ms = 1000 * self.cpu_s / answered if self.cpu_s is not None and answered else float("nan")
        numbers = [f"{value:.1f}" for value in (p50, p95, p99, server, cpu_ms, rate)]
        cells = [self.endpoint, str(self.concurrency), *numbers, codes]
        return "| " + " | ".join(cells) + " |"


def cfp_photos(data_root: Path, count: int, seed: int = 0) -> list[bytes]:
    """`count` CFP frontal photos of different people, each fitted into a 250x250 JPEG."""
    folders = sorted((data_root / "cfp" / "Data" / "Images").iterdir())
    random.Random(seed).shuffle(folders)
    photos = []
    for folder in folders[:count]:
        image = cv2.imread(str(folder / "frontal" / "01.jpg"), cv2.IMREAD_COLOR)
        scale = PHOTO_SIDE / max(image.shape[:2])
        resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
        canvas = np.full((PHOTO_SIDE, PHOTO_SIDE, 3), 127, np.uint8)
        top, left = (PHOTO_SIDE - resized.shape[0]) // 2, (PHOTO_SIDE - resized.shape[1]) // 2
        canvas[top : top + resized.shape[0], left : left + resized.shape[1]] = resized
        photos.append(cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return photos


def request_for(endpoint: str, photos: list[bytes], i: int) -> dict:
    first = photos[i % len(photos)]
    if endpoint == "/v1/embed":
        return {"files": {"image": ("photo.jpg", first, "image/jpeg")}}
    if endpoint == "/v1/verify":
        second = photos[(i * 7 + 3) % len(photos)]
        return {
            "files": {"image1": ("a.jpg", first, "image/jpeg"), "image2": ("b.jpg", second, "image/jpeg")}
        }
    return {}


async def run_level(
    http: httpx.AsyncClient,
    endpoint: str,
    photos: list[bytes],
    concurrency: int,
    requests: int,
    server_pid: int | None = None,
) -> Result:
    """`requests` requests to `endpoint`, `concurrency` at a time (closed loop)."""
    result = Result(endpoint, concurrency)
    counter = iter(range(requests))

    async def worker() -> None:
        for i in counter:
            start = time.perf_counter()
            if endpoint == "/healthz":
                response = await http.get(endpoint)
            else:
                response = await http.post(endpoint, **request_for(endpoint, photos, i))
            elapsed_ms = (time.perf_counter() - start) * 1000
            result.statuses[response.status_code] += 1
            if response.status_code == 200:
                result.latencies_ms.append(elapsed_ms)
                if endpoint != "/healthz":
                    result.server_ms.append(response.json()["time_ms"])

    cpu_before = process_cpu_s(server_pid)
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - start
    cpu_after = process_cpu_s(server_pid)
    if cpu_before is not None and cpu_after is not None:
        result.cpu_s = cpu_after - cpu_before
    return result


def process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds used so far by process `pid` (Linux /proc), None if unknown.

    Unlike latency, this hardly changes when other programs compete for the cores, so it shows what a
    request costs on an otherwise idle machine.
    """
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_all(
    url: str, api_key: str | None, photos: list[bytes], levels: list[int], requests: int, pid: int | None
) -> list[Result]:
    headers = {"X-API-Key": api_key} if api_key else {}
    limits = httpx.Limits(max_connections=max(levels) + 2, max_keepalive_connections=max(levels) + 2)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as http:
        for endpoint in ("/v1/embed", "/v1/verify"):  # warm-up: connections, caches, allocator
            await run_level(http, endpoint, photos, 1, 5)
        results = [await run_level(http, "/healthz", photos, 1, requests, pid)]
        for endpoint in ("/v1/embed", "/v1/verify"):
            for concurrency in levels:
                results.append(
                    await run_level(http, endpoint, photos, concurrency, max(requests, 4 * concurrency), pid)
                )
                print(results[-1].row(), flush=True)
    return results


def start_server(
    env: dict[str, str],
    log_path: Path | None = None,
    inherit_settings: bool = True,
    ready_timeout_s: float = 120,
    log_level: str | None = "warning",
) -> tuple[subprocess.Popen, str]:
    """`drface serve` on a free loopback port with the DRFACE_* settings `env`; returns (process, base URL)
    once /readyz is 200. `log_path`: its stdout and stderr go there; `inherit_settings=False`: the DRFACE_*
    variables of this process are not passed on; `log_level` None: the service's default."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    inherited = {k: v for k, v in os.environ.items() if inherit_settings or not k.startswith("DRFACE_")}
    quiet = {"DRFACE_LOG_LEVEL": log_level} if log_level is not None else {}
    environment = {**inherited, **quiet, **env}
    command = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    log = open(log_path, "wb") if log_path is not None else None  # noqa: SIM115 (the child keeps it)
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            where = f"; see {log_path}" if log_path is not None else ""
            raise SystemExit(f"server exited with code {process.returncode}{where}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.terminate()
    raise SystemExit(f"server did not become ready in {ready_timeout_s:.0f} s")


def default_data_root() -> Path:
    """$DRFACE_DATA_ROOT, else the shared data beside the repository."""
    return Path(os.environ.get("DRFACE_DATA_ROOT", str(REPO_ROOT.parent / "shared" / "data")))


def load_average() -> str:
    """1, 5 and 15 minute load averages: how much else ran on the machine during the test."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", type=Path, default=default_data_root(), help="folder holding cfp/")
    parser.add_argument("--url", help="test a running server instead of starting one")
    parser.add_argument("--api-key", help="X-API-Key for --url")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument(
        "--requests", type=int, default=100, help="requests per level (at least 4 x concurrency)"
    )
    parser.add_argument("--photos", type=int, default=20, help="distinct CFP photos to cycle through")
    parser.add_argument(
        "--server-env",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="DRFACE_* settings of the started server",
    )
    args = parser.parse_args(argv)
    photos = cfp_photos(args.data_root, args.photos)
    process = None
    url = args.url
    if url is None:
        process, url = start_server(dict(item.split("=", 1) for item in args.server_env))
    try:
        cpus = len(os.sched_getaffinity(0))
        print(f"server {url}; {cpus} CPUs usable, shared by client and server", flush=True)
        print(f"load average before: {load_average()}", flush=True)
        print(TABLE_HEADER, flush=True)
        pid = process.pid if process is not None else None
        results = asyncio.run(run_all(url, args.api_key, photos, args.concurrency, args.requests, pid))
        print(f"load average after: {load_average()}")
        print("\nfull table:")
        print(TABLE_HEADER)
        for result in results:
            print(result.row())
        baseline = float(np.median(results[0].latencies_ms))
        embed_c1 = next(
            r for r in results if r.endpoint == "/v1/embed" and r.concurrency == args.concurrency[0]
        )
        print(
            f"\n/v1/embed p50 at concurrency {args.concurrency[0]} = "
            f"{np.median(embed_c1.latencies_ms) / baseline:.1f} x the /healthz p50 ({baseline:.2f} ms)"
        )
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
