"""DRConv-MobileFaceNet vs the plain MobileFaceNet of the same shape: ratios measured in one run.

Measures (fp32, 112x112 input):
- inference latency at batch 1 and throughput at batch 32 (eval mode, inference_mode), eager and as served
  (`drface serve` runs a frozen TorchScript trace, model/trace.py `trace_for_inference`);
- a training step (forward + ArcFace head + cross-entropy + backward + SGD step) at --train-batch;
- peak memory of one training step at --memory-batch (128): on CPU the growth of the peak resident set
  (VmHWM, reset just before the step) over the resident set just before the step, each variant in its
  own fresh subprocess (Linux); on CUDA torch.cuda.max_memory_allocated over memory_allocated before.
  RSS moves with the allocator, so the bytes of the tensors autograd saves for backward (the activation
  memory, exact and deterministic) are printed too.
Timings alternate plain / DRConv in rounds and take the best round of each (the machine is shared, so the
minimum is the least contended estimate); medians are printed too. Ratios are DRConv / plain.

    python benchmarks/bench_backbone.py [--quick] [--threads 1] [--device cpu] [--stages stage1] [--convs ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.heads import MarginHead  # noqa: E402
from model.mobilefacenet import INPUT_SIZE, BackboneConfig, MobileFaceNet  # noqa: E402
from model.trace import TracedNetwork, trace_for_inference  # noqa: E402

StepMaker = Callable[[MobileFaceNet], Callable[[], object]]
"""Builds, for one model, the step a measurement times."""

NUM_CLASSES = 1000
"""Classes of the margin head in the training step (small, so the backbone dominates)."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], object], iterations: int, device: torch.device) -> float:
    """Seconds per call of fn, averaged over `iterations` calls."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / iterations


def _compare(
    make_step: StepMaker,
    models: dict[str, MobileFaceNet],
    rounds: int,
    iterations: int,
    device: torch.device,
) -> dict[str, list[float]]:
    """Seconds per step of each model, one entry per round; models alternate within every round."""
    steps = {name: make_step(model) for name, model in models.items()}
    for step in steps.values():  # warm-up (allocator, oneDNN primitive cache)
        _time(step, 2, device)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, step in steps.items():
            times[name].append(_time(step, iterations, device))
    return times


def inference_step(batch: int, device: torch.device, served: bool = False) -> StepMaker:
    """Eval-mode forward; ``served``: through the traced network the service runs (BN folded, oneDNN)."""
    faces = torch.randn(batch, 3, INPUT_SIZE, INPUT_SIZE, device=device)

    def make(model: MobileFaceNet) -> Callable[[], object]:
        network: torch.nn.Module = model.eval()
        if served:
            network = trace_for_inference(model)
            if not isinstance(network, TracedNetwork):
                raise RuntimeError("tracing failed: the service would run the eager network (see warning)")

        def step() -> object:
            with torch.inference_mode():
                return network(faces)

        return step

    return make


def training_step(batch: int, device: torch.device) -> StepMaker:
    faces = torch.randn(batch, 3, INPUT_SIZE, INPUT_SIZE, device=device)
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)

    def make(model: MobileFaceNet) -> Callable[[], object]:
        model.train()
        head = MarginHead(model.config.embedding_dim, NUM_CLASSES, scale=32.0).to(device)
        optimizer = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=1e-3, momentum=0.9)

        def step() -> object:
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(head(model(faces), labels), labels)
            loss.backward()
            optimizer.step()
            return loss

        return step

    return make


def _rss_bytes(field: str) -> int:
    """VmRSS (current) or VmHWM (peak) resident set of this process from /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0). ru_maxrss cannot be used: it survives fork + exec,
    so a child would report its parent's peak."""
    Path("/proc/self/clear_refs").write_text("5")


def memory_child(config_json: str, batch: int, device: str) -> None:
    """Run one training step in this (fresh) process; print as JSON its peak memory growth in bytes and the
    bytes of the tensors autograd saved for backward (distinct storages; deterministic, unlike RSS)."""
    dev = torch.device(device)
    model = MobileFaceNet(BackboneConfig.model_validate_json(config_json)).to(dev)
    step = training_step(batch, dev)(model)
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        with hooks:
            step()
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev)
    else:
        _reset_peak_rss()
        before = _rss_bytes("VmRSS")
        with hooks:
            step()
        peak = _rss_bytes("VmHWM")
    print(json.dumps({"step_peak_bytes": peak - before, "saved_bytes": sum(saved.values())}))


def measure_memory(config: BackboneConfig, batch: int, device: str, threads: int) -> dict[str, int]:
    """{'step_peak_bytes', 'saved_bytes'} of one training step, measured in a fresh subprocess."""
    command = [
        sys.executable,
        __file__,
        "--memory-child",
        config.model_dump_json(),
        "--memory-batch",
        str(batch),
        "--device",
        device,
        "--threads",
        str(threads),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _row(label: str, times: dict[str, list[float]], unit: Callable[[float], str]) -> str:
    best = {name: min(values) for name, values in times.items()}
    median = {name: statistics.median(values) for name, values in times.items()}
    return (
        f"| {label} | {unit(best['plain'])} | {unit(best['drconv'])} | {best['drconv'] / best['plain']:.2f}x "
        f"| {median['drconv'] / median['plain']:.2f}x |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = BackboneConfig()
    parser.add_argument("--quick", action="store_true", help="fewer rounds and a smaller memory batch")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--region-num", type=int, default=defaults.region_num)
    parser.add_argument("--stages", nargs="+", default=list(defaults.drconv_stages))
    parser.add_argument("--convs", nargs="+", default=list(defaults.drconv_convs))
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--memory-batch", type=int, default=128)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args.memory_batch, args.device)
        return 0

    device = torch.device(args.device)
    options = {"region_num": args.region_num, "drconv_stages": args.stages, "drconv_convs": args.convs}
    configs = {name: BackboneConfig(drconv=name == "drconv", **options) for name in ("plain", "drconv")}
    torch.manual_seed(0)
    models = {name: MobileFaceNet(config).to(device) for name, config in configs.items()}
    rounds = 3 if args.quick else 7
    memory_batch = 32 if args.quick else args.memory_batch

    def ms(seconds: float) -> str:
        return f"{seconds * 1e3:.1f} ms"

    def per_second(batch: int) -> Callable[[float], str]:
        return lambda seconds: f"{batch / seconds:.0f} img/s"

    print(f"device={device} threads={args.threads} torch={torch.__version__} placement={options}")
    print("| measurement | plain | DRConv | ratio (best) | ratio (median) |")
    print("| --- | --- | --- | --- | --- |")
    times = _compare(inference_step(1, device), models, rounds, 5 if args.quick else 20, device)
    print(_row("inference latency, batch 1", times, ms), flush=True)
    times = _compare(inference_step(32, device), models, rounds, 1 if args.quick else 2, device)
    print(_row("inference throughput, batch 32", times, per_second(32)), flush=True)
    times = _compare(inference_step(1, device, served=True), models, rounds, 5 if args.quick else 20, device)
    print(_row("served (traced) inference latency, batch 1", times, ms), flush=True)
    times = _compare(training_step(args.train_batch, device), models, rounds, 1, device)
    print(_row(f"training step, batch {args.train_batch}", times, ms), flush=True)
    if not args.skip_memory:
        memory = {
            name: measure_memory(config, memory_batch, args.device, args.threads)
            for name, config in configs.items()
        }
        for key, label in (("step_peak_bytes", "peak memory"), ("saved_bytes", "tensors saved for backward")):
            plain, dynamic = memory["plain"][key], memory["drconv"][key]
            print(
                f"| training step {label}, batch {memory_batch} | {plain / 2**20:.0f} MiB "
                f"| {dynamic / 2**20:.0f} MiB | {dynamic / plain:.2f}x | (one run) |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
