"""PyTorch vs onnxruntime for the same model: per-face latency and throughput, ratios from one run.

Backends, all on CPU in float32 with the same thread count:
- torch eager: the network as loaded (the fused DRConv operator when built, model/fused.py);
- torch traced: a frozen, inference-optimised TorchScript trace, as `drface serve` runs embeddings;
- onnxruntime: the file `drface export --region-maps` writes (model/onnx_backend.py), all graph optimisations.
Measured: embeddings as served (`embed_faces`: the face and its flip in one batch, normalised) at batch 1
and 4, and the region maps of one face. Timings alternate the backends in rounds and keep each one's best
round (the machine is shared: the minimum is the least contended estimate); medians are printed too.

    python benchmarks/bench_backends.py [--weights W] [--onnx FILE] [--threads 1] [--rounds 7] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import fused  # noqa: E402
from model.artifact import DEFAULT_WEIGHTS, load_artifact  # noqa: E402
from model.embed import embed_faces  # noqa: E402
from model.export import export_onnx, synthetic_inputs  # noqa: E402
from model.onnx_backend import OnnxNetwork  # noqa: E402
from model.trace import trace_for_inference  # noqa: E402

BATCHES = (1, 4)


def _seconds(step: Callable[[], object], iterations: int) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    return (time.perf_counter() - start) / iterations


def measure(steps: dict[str, Callable[[], object]], rounds: int, iterations: int) -> dict[str, list[float]]:
    """Seconds per call of each step, one entry per round; steps alternate within every round."""
    for step in steps.values():
        _seconds(step, 2)  # warm-up: allocators, oneDNN / onnxruntime kernel caches
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            times[name].append(_seconds(step, iterations))
    return times


def embed_steps(networks: dict[str, torch.nn.Module], batch: int) -> dict[str, Callable[[], object]]:
    faces = synthetic_inputs(batch, seed=batch)
    return {name: (lambda n=network: embed_faces(n, faces)) for name, network in networks.items()}


def mask_steps(networks: dict[str, torch.nn.Module]) -> dict[str, Callable[[], object]]:
    face = synthetic_inputs(1, seed=3)
    return {name: (lambda n=network: n.region_masks(face)) for name, network in networks.items()}


def report(title: str, times: dict[str, list[float]], per: int, reference: str) -> None:
    """One row per backend: best and median ms per face, faces/s, and the ratio to `reference`."""
    best = {name: min(values) / per for name, values in times.items()}
    print(f"\n{title}")
    print(f"  {'backend':<14} {'best ms/face':>13} {'median':>8} {'faces/s':>8} {f'vs {reference}':>16}")
    for name, values in times.items():
        median_ms = 1e3 * statistics.median(values) / per
        ratio = best[name] / best[reference]
        row = f"{1e3 * best[name]:>13.2f} {median_ms:>8.2f} {1 / best[name]:>8.1f} {ratio:>15.2f}x"
        print(f"  {name:<14} {row}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--onnx", type=Path, default=None, help="exported file (default: export one now)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of every backend")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="2 rounds of few calls: a smoke run")
    args = parser.parse_args(argv)
    rounds, iterations = (2, 3) if args.quick else (args.rounds, 20)
    torch.set_num_threads(args.threads)
    loaded = load_artifact(args.weights)
    with tempfile.TemporaryDirectory() as folder:
        path = args.onnx or Path(folder) / "model.onnx"
        if args.onnx is None:
            export_onnx(loaded, path, region_maps=True)
        onnx_network = OnnxNetwork(path, threads=args.threads)
    networks: dict[str, torch.nn.Module] = {
        "torch eager": loaded.model,
        "torch traced": trace_for_inference(loaded.model),
        "onnxruntime": onnx_network,
    }
    print(
        f"{loaded.card.name} {loaded.card.version}, {args.threads} thread(s), fused DRConv operator: "
        f"{'built' if fused.available() else 'not built (pure PyTorch path)'}; best of {rounds} rounds"
    )
    for batch in BATCHES:
        times = measure(embed_steps(networks, batch), rounds, iterations)
        report(f"embed_faces at batch {batch} (face + flip)", times, batch, "torch traced")
    eager_and_onnx = {name: networks[name] for name in ("torch eager", "onnxruntime")}
    times = measure(mask_steps(eager_and_onnx), rounds, iterations)
    report("region maps of one face", times, 1, "torch eager")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
