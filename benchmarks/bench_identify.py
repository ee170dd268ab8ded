"""Identify latency of the gallery's exact search at 10k, 100k and 1M templates (synthetic embeddings).

    python benchmarks/bench_identify.py                       # 10k, 100k, 1M templates, D = 512
    python benchmarks/bench_identify.py --sizes 10000 --queries 20

What is timed is `TemplateIndex.search` (app/gallery/index.py), the part of `POST /v1/identify` that grows
with the gallery: one (N, D) @ (D,) float32 product over the contiguous matrix, then the top-k subjects.
The photo's embedding (tens of ms, independent of N) comes on top. Random unit vectors, two templates per
subject; the search is exact, so its cost depends on N and D only, not on what the vectors look like.
Wall time is per query (median, p95); "CPU ms" is the process's CPU time per query across BLAS threads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app.gallery.index import TemplateIndex  # noqa: E402

TEMPLATES_PER_SUBJECT = 2


def random_unit_rows(count: int, dim: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """(count, dim) float32 unit rows, made a chunk at a time (no float64 copy of the whole matrix)."""
    rng = np.random.default_rng(seed)
    rows = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, chunk):
        block = rng.standard_normal((min(chunk, count - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        rows[start : start + len(block)] = block
    return rows


def measure(size: int, dim: int, queries: int, top_k: int) -> dict[str, float]:
    embeddings = random_unit_rows(size, dim, seed=size)
    template_ids = [f"t{i}" for i in range(size)]
    subject_ids = [f"s{i // TEMPLATES_PER_SUBJECT}" for i in range(size)]
    start = time.perf_counter()
    index = TemplateIndex.from_rows(embeddings, template_ids, subject_ids, version=0)
    build_s = time.perf_counter() - start
    del embeddings
    probes = random_unit_rows(queries + 1, dim, seed=size + 1)
    index.search(probes[-1], top_k)  # warm-up: page in the matrix
    walls, cpus = [], []
    for probe in probes[:queries]:
        wall, cpu = time.perf_counter(), time.process_time()
        found = index.search(probe, top_k)
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
        assert len(found) == top_k
    walls.sort()
    return {
        "matrix_mb": size * dim * 4 / 2**20,
        "build_s": build_s,
        "p50_ms": statistics.median(walls) * 1000,
        "p95_ms": walls[min(len(walls) - 1, round(0.95 * (len(walls) - 1)))] * 1000,
        "cpu_ms": statistics.mean(cpus) * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512, help="embedding length D (the shipped model's: 512)")
    parser.add_argument(
        "--queries", type=int, default=30, help="queries per size (at most 10 at 1M and above)"
    )
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args()
    print(
        f"exact cosine top-{args.top_k}, D = {args.dim}, {TEMPLATES_PER_SUBJECT} templates per subject, "
        f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print("| templates | matrix MB | p50 ms | p95 ms | CPU ms/query | queries |")
    print("| --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        queries = args.queries if size < 1_000_000 else min(args.queries, 10)
        row = measure(size, args.dim, queries, args.top_k)
        print(
            f"| {size:,} | {row['matrix_mb']:,.0f} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | "
            f"{row['cpu_ms']:.1f} | {queries} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
