"""What batching faces across requests would save in the network: CPU ms per face at batch 1, 2, 4, 8, 16.

The service runs the network once per request (one face + its mirror: batch 2). A micro-batcher that groups
the faces of concurrent requests would run one call of B faces (2B images with the flip) instead of B calls.
This measures, in one run with the service's traced network and settings (DRFACE_TORCH_THREADS to change),
the network's wall and CPU ms per face at each batch size, the sizes alternating so a change of load hits all.

    python benchmarks/bench_network_batch.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]

from drface_steps import DrfaceSteps  # noqa: E402
from load_test import load_average  # noqa: E402

WARM_UP = 5  # calls per size before timing: the trace profiles its first calls per shape


def per_face_ms(
    steps: DrfaceSteps, sizes: list[int], repeats: int, flip: bool = True
) -> dict[int, tuple[float, float]]:
    """{batch size: (median wall ms per face, median CPU ms per face)}."""
    face = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    batches = {size: steps.tensor([face] * size) for size in sizes}
    samples: dict[int, list[tuple[float, float]]] = {size: [] for size in sizes}
    for i in range(WARM_UP + repeats):
        for size in sizes:
            wall, cpu = time.perf_counter(), time.process_time()
            steps.network(batches[size], flip=flip)
            if i >= WARM_UP:
                samples[size].append(
                    ((time.perf_counter() - wall) * 1000 / size, (time.process_time() - cpu) * 1000 / size)
                )
    return {size: tuple(np.median(values, axis=0)) for size, values in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="faces per call")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per size")
    args = parser.parse_args(argv)
    steps = DrfaceSteps()
    print(f"torch threads {steps.settings.thread_count()}; load average before: {load_average()}", flush=True)
    results = {flip: per_face_ms(steps, args.sizes, args.repeats, flip) for flip in (True, False)}
    print(f"load average after: {load_average()}\n")
    print("| faces per call | flip: wall ms/face | CPU | no flip: wall ms/face | CPU |")
    print("| --- | --- | --- | --- | --- |")
    for size in args.sizes:
        (fw, fc), (pw, pc) = results[True][size], results[False][size]
        print(f"| {size} | {fw:.1f} | {fc:.1f} | {pw:.1f} | {pc:.1f} |")
    one, best = args.sizes[0], min(args.sizes, key=lambda s: results[True][s][1])
    saving = results[True][one][1] / results[True][best][1]
    print(f"\nwith flip: batch {best} costs {saving:.2f}x less CPU per face than batch {one}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
