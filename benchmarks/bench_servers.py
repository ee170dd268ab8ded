"""`/v1/embed` through HTTP on differently configured servers, in one run (default: the two serving backends).

    python benchmarks/bench_servers.py                     # DRFACE_BACKEND=torch vs onnxruntime
    python benchmarks/bench_servers.py --variant 2-threads:DRFACE_TORCH_THREADS=2 \\
        --variant 1-thread:DRFACE_TORCH_THREADS=1          # any DRFACE_* settings, the first is the baseline

Starts one `drface serve` per variant (an onnxruntime one exports the shipped weights at start-up), then
alternates them level by level (each round: every variant at each concurrency) so the machine's load falls on
all alike. Prints p50 latency and requests/s per variant and concurrency (medians over the rounds) and each
variant's ratios to the first. Photos: CFP images cut to 250x250, as benchmarks/load_test.py sends.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_test import cfp_photos, default_data_root, load_average, run_level, start_server  # noqa: E402

DEFAULT_VARIANTS = ["torch:DRFACE_BACKEND=torch", "onnxruntime:DRFACE_BACKEND=onnxruntime"]


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """'name:KEY=VALUE,KEY=VALUE' -> (name, environment)."""
    name, _, settings = text.partition(":")
    environment = dict(item.split("=", 1) for item in settings.split(",") if item)
    return name, environment


async def measure(
    urls: dict[str, str], photos: list[bytes], levels: list[int], requests: int, rounds: int
) -> dict[tuple[str, int], list[tuple[float, float]]]:
    """{(variant, concurrency): [(p50 ms, requests/s) per round]}."""
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    clients = {name: httpx.AsyncClient(base_url=url, timeout=120) for name, url in urls.items()}
    try:
        for client in clients.values():  # warm-up: connections, first inferences
            await run_level(client, "/v1/embed", photos, 1, 4)
        for _ in range(rounds):
            for concurrency in levels:
                for name, client in clients.items():
                    level = await run_level(client, "/v1/embed", photos, concurrency, requests)
                    rate = sum(level.statuses.values()) / level.wall_s
                    p50 = float(np.median(level.latencies_ms))
                    results.setdefault((name, concurrency), []).append((p50, rate))
    finally:
        for client in clients.values():
            await client.aclose()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", type=Path, default=default_data_root(), help="folder holding cfp/")
    parser.add_argument(
        "--variant", action="append", help="NAME:KEY=VALUE[,KEY=VALUE] (repeat; default: the two backends)"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--requests", type=int, default=60, help="requests per level and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--photos", type=int, default=20)
    args = parser.parse_args(argv)
    variants = dict(parse_variant(text) for text in (args.variant or DEFAULT_VARIANTS))
    photos = cfp_photos(args.data_root, args.photos)
    servers = {name: start_server(environment) for name, environment in variants.items()}
    try:
        print(f"load average before: {load_average()}", flush=True)
        urls = {name: url for name, (_, url) in servers.items()}
        results = asyncio.run(measure(urls, photos, args.concurrency, args.requests, args.rounds))
        print(f"load average after: {load_average()}")
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=30)
    names = list(variants)
    baseline = names[0]
    print(f"\n/v1/embed, medians of {args.rounds} round(s) of {args.requests} requests; ratios to {baseline}")
    print("| variant | settings | concurrency | p50 ms | requests/s | p50 ratio | throughput ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for concurrency in args.concurrency:
        p50 = {n: statistics.median(r[0] for r in results[(n, concurrency)]) for n in names}
        rate = {n: statistics.median(r[1] for r in results[(n, concurrency)]) for n in names}
        for name in names:
            settings = ", ".join(f"{k}={v}" for k, v in variants[name].items()) or "defaults"
            print(
                f"| {name} | {settings} | {concurrency} | {p50[name]:.1f} | {rate[name]:.1f} | "
                f"{p50[name] / p50[baseline]:.2f}x | {rate[name] / rate[baseline]:.2f}x |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
