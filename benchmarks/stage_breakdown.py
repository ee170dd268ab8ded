"""Where a request's time goes: decode, detect, align, tensor, network, serialisation, HTTP; ms, one run.

For `/v1/embed` (one photo) and `/v1/verify` (two photos), with load_test.py's 250x250 CFP photos:
1. In this process, with the service's own steps, threads and traced network (benchmarks/drface_steps.py),
   each request's pipeline is timed step by step; the network also without the flip, to show what it costs,
   and on the micro-batcher's workers (image and mirror on two cores, as `DRFACE_MICRO_BATCH=idle` serves a
   lone request).
   Serialisation: the response model built from the result and dumped to JSON, as the route returns it.
2. Against a real `drface serve` on loopback (load_test.py's client), at concurrency 1: the client's latency
   and the server's own pipeline time (`time_ms`) per request. Their difference is what HTTP, multipart
   parsing, the framework, serialisation and the thread hand-off cost; less the serialisation measured in 1,
   it is the "HTTP + framework" row. `/healthz` is that floor without a body.
Medians over the requests; the load average is printed (the cores are shared, compare rows within one run).

    python benchmarks/stage_breakdown.py [--requests 100]
    DRFACE_TORCH_THREADS=1 python benchmarks/stage_breakdown.py   # settings reach both parts
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]

from drface_steps import STEPS, DrfaceSteps, StepTimes  # noqa: E402
from load_test import cfp_photos, default_data_root, load_average, run_level, start_server  # noqa: E402

from app.batcher import NetworkBatcher  # noqa: E402
from app.schemas import EmbedResponse, FaceOut, VerifyResponse  # noqa: E402
from model.embed import embed_with  # noqa: E402

ENDPOINTS = ("/v1/embed", "/v1/verify")
# Requests run before timing: a TorchScript trace profiles its first calls and re-optimises after them.
WARM_UP = 10


def second_photo(photos: list[bytes], i: int) -> bytes:
    """The photo load_test.py sends as image2 of request `i`."""
    return photos[(i * 7 + 3) % len(photos)]


def face_out(embedding: np.ndarray) -> FaceOut:
    # Box and landmarks are 14 numbers next to the embedding's D: fixed ones serialise the same way.
    landmarks = [[92.1, 105.3], [140.7, 104.8], [117.0, 133.2], [97.4, 161.0], [136.9, 160.6]]
    return FaceOut(
        box=[61.2, 48.9, 171.5, 190.3], score=0.998, landmarks=landmarks, embedding=embedding.tolist()
    )


def serialise(endpoint: str, embeddings: np.ndarray) -> bytes:
    """The response body the route would send for these embeddings."""
    if endpoint == "/v1/embed":
        response = EmbedResponse(faces=[face_out(e) for e in embeddings], model="drface@0.1.0", time_ms=1.0)
    else:
        response = VerifyResponse(
            similarity=float(np.dot(embeddings[0], embeddings[1])),
            threshold=0.3,
            operating_point="far_1e-3",
            verified=True,
            faces=[face_out(e) for e in embeddings],
            model="drface@0.1.0",
            time_ms=1.0,
        )
    return json.dumps(response.model_dump(mode="json"), separators=(",", ":")).encode()


def in_process(
    steps: DrfaceSteps, batcher: NetworkBatcher, photos: list[bytes], endpoint: str, requests: int
) -> dict[str, tuple[float, float]]:
    """{step: (median wall ms, median CPU ms)} per request, for each step, the network without flip, the
    network on the batcher's workers and serialisation."""
    names = (*STEPS, "network, no flip", "network, workers", "serialisation")
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for i in range(requests + WARM_UP):
        times = StepTimes()
        if endpoint == "/v1/embed":
            embeddings = steps.embed_photo(photos[i % len(photos)], times=times)
        else:
            embeddings = steps.verify_photos(photos[i % len(photos)], second_photo(photos, i), times=times)
        batch = steps.tensor([np.zeros((112, 112, 3), np.uint8)] * len(embeddings))
        times.start()
        steps.network(batch, flip=False)
        times.add("network, no flip")
        embed_with(batcher.features, batch, flip=True)
        times.add("network, workers")
        serialise(endpoint, embeddings)
        times.add("serialisation")
        if i >= WARM_UP:
            for name in names:
                samples[name].append((times.ms[name], times.cpu_ms[name]))
    return {name: tuple(np.median(values, axis=0)) for name, values in samples.items()}


async def over_http(url: str, photos: list[bytes], requests: int, pid: int) -> dict[str, dict[str, float]]:
    """Per endpoint: client p50, server `time_ms` p50 and p50 of their difference, at concurrency 1."""
    measured = {}
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        for endpoint in ENDPOINTS:
            await run_level(http, endpoint, photos, 1, 5)  # warm-up
        health = await run_level(http, "/healthz", photos, 1, requests, pid)
        measured["/healthz"] = {"total": float(np.median(health.latencies_ms))}
        for endpoint in ENDPOINTS:
            result = await run_level(http, endpoint, photos, 1, requests, pid)
            client, server = np.array(result.latencies_ms), np.array(result.server_ms)
            measured[endpoint] = {
                "total": float(np.median(client)),
                "server": float(np.median(server)),
                "outside": float(np.median(client - server)),
                "cpu": 1000 * (result.cpu_s or float("nan")) / len(client),
            }
    return measured


def table(stages: dict[str, dict[str, tuple[float, float]]], http: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per stage; wall and CPU ms per endpoint (CPU: this process or the server's)."""
    labels = {
        "decode": "decode (JPEG -> BGR)",
        "detect": "detect (RetinaFace, incl. resize + second pass)",
        "align": "align (5-point warp)",
        "tensor": "tensor (uint8 BGR -> float RGB)",
        "network": "network (image + flip, one batch)",
    }
    nan = float("nan")
    rows = [(label, [stages[e][name] for e in ENDPOINTS]) for name, label in labels.items()]
    pipeline = [tuple(sum(stages[e][s][k] for s in STEPS) for k in (0, 1)) for e in ENDPOINTS]
    rows += [
        ("= pipeline, in process", pipeline),
        ("pipeline in the server (`time_ms`)", [(http[e]["server"], nan) for e in ENDPOINTS]),
        ("serialisation (response model -> JSON)", [stages[e]["serialisation"] for e in ENDPOINTS]),
        (
            "HTTP + multipart + framework + thread hand-off",
            [(http[e]["outside"] - stages[e]["serialisation"][0], nan) for e in ENDPOINTS],
        ),
        (
            "**total, client p50** (CPU: the server's, per request)",
            [(http[e]["total"], http[e]["cpu"]) for e in ENDPOINTS],
        ),
        (
            "network without flip (image only), for comparison",
            [stages[e]["network, no flip"] for e in ENDPOINTS],
        ),
        (
            "network, image and mirror on two workers (`DRFACE_MICRO_BATCH=idle`, a lone request)",
            [stages[e]["network, workers"] for e in ENDPOINTS],
        ),
    ]
    header = " | ".join(f"`{e}` wall | `{e}` CPU" for e in ENDPOINTS)
    lines = [f"| ms per request (p50) | {header} |", "| --- | --- | --- | --- | --- |"]
    for label, values in rows:
        cells = " | ".join("-" if np.isnan(v) else f"{v:.1f}" for pair in values for v in pair)
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", type=Path, default=default_data_root(), help="folder holding cfp/")
    parser.add_argument("--requests", type=int, default=100, help="requests per endpoint and part")
    parser.add_argument("--photos", type=int, default=20, help="distinct CFP photos to cycle through")
    args = parser.parse_args(argv)
    photos = cfp_photos(args.data_root, args.photos)
    print(f"load average before: {load_average()}", flush=True)
    steps = DrfaceSteps()
    settings = steps.settings
    batcher = NetworkBatcher(
        steps.network_module,
        settings.network_workers(),
        settings.batch_max_images,
        threads=settings.thread_count(),
    )
    stages = {endpoint: in_process(steps, batcher, photos, endpoint, args.requests) for endpoint in ENDPOINTS}
    batcher.close()
    print(f"load average after the in-process part: {load_average()}", flush=True)
    process, url = start_server({})
    try:
        http = asyncio.run(over_http(url, photos, args.requests, process.pid))
    finally:
        process.terminate()
        process.wait(timeout=30)
    print(f"load average after the HTTP part: {load_average()}\n")
    print(table(stages, http))
    print(f"\n/healthz p50 (HTTP + framework, no body, no pipeline): {http['/healthz']['total']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
