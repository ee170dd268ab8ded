"""DRConv2d vs nn.Conv2d of the same shape: time ratios measured in one run, plus parameter counts.

    python benchmarks/bench_drconv.py            # every pointwise shape of MobileFaceNet, batch 1 and 32
    python benchmarks/bench_drconv.py --quick    # the default backbone's DRConv shapes only, fewer repeats

Rows marked * are shapes the default DRConv-MobileFaceNet uses for DRConv (read from the built network).

Ratios > 1 mean DRConv is slower. "infer": eval mode under torch.inference_mode (generator, guide and mask
included). "train": forward + backward (input and all weights get gradients). Each time is a median over
repeated runs, DRConv and Conv2d runs interleaved so machine noise hits both alike; by default the clock is
the thread's CPU time (one intra-op thread), which other users of a shared machine barely disturb.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model.drconv import DRConv2d  # noqa: E402
from model.mobilefacenet import INPUT_SIZE, BackboneConfig, MobileFaceNet  # noqa: E402


@dataclass(frozen=True)
class Shape:
    """One 1x1 conv of the backbone: (C -> O) on an H x W map."""

    name: str
    in_channels: int
    out_channels: int
    size: int


SHAPES = (
    Shape("stage1.0.expand", 64, 128, 56),
    Shape("stage1.project", 128, 64, 28),
    Shape("stage1.expand", 64, 128, 28),
    Shape("stage2.expand", 64, 256, 28),
    Shape("stage2.project", 256, 128, 14),
    Shape("stage3.expand", 128, 256, 14),
    Shape("stage4.expand", 128, 512, 14),
    Shape("stage4.project", 512, 128, 7),
    Shape("stage5.expand", 128, 256, 7),
    Shape("conv_last", 128, 512, 7),
)


def default_drconv_shapes() -> set[tuple[int, int, int]]:
    """(C, O, H) of every DRConv in the default DRConv-MobileFaceNet, read from a forward pass."""
    found: set[tuple[int, int, int]] = set()

    def record(layer: nn.Module, inputs: tuple[torch.Tensor, ...], _output: object) -> None:
        found.add((layer.in_channels, layer.out_channels, inputs[0].shape[-1]))

    network = MobileFaceNet(BackboneConfig()).eval()
    for layer in network.modules():
        if isinstance(layer, DRConv2d):
            layer.register_forward_hook(record)
    with torch.inference_mode():
        network(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE))
    return found


def _median_pair(
    first: Callable[[], object],
    second: Callable[[], object],
    repeats: int,
    warmup: int,
    clock: Callable[[], float],
) -> tuple[float, float]:
    """Median seconds of two callables, interleaved."""
    for _ in range(warmup):
        first()
        second()
    times_first, times_second = [], []
    for _ in range(repeats):
        start = clock()
        first()
        times_first.append(clock() - start)
        start = clock()
        second()
        times_second.append(clock() - start)
    return statistics.median(times_first), statistics.median(times_second)


def _inference(layer: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            return layer(x)

    return run


def _train_step(layer: nn.Module, x: torch.Tensor, grad_out: torch.Tensor) -> Callable[[], object]:
    """Forward + backward of the layer alone: a fixed upstream gradient instead of a loss."""
    x = x.clone().requires_grad_()

    def run() -> object:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).backward(grad_out)
        return x.grad

    return run


def _repeats(batch: int, size: int, quick: bool) -> int:
    work = batch * size * size
    base = 5 if quick else 15
    return max(base, min(200, (base * 200_000) // max(work, 1)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="default-backbone shapes only, fewer repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--region-num", type=int, default=8)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu: this thread's CPU time (robust on a shared machine; needs --threads 1); wall: elapsed",
    )
    parser.add_argument("--channels-last", action="store_true", help="run both layers on channels_last input")
    args = parser.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu measures one thread; use --threads 1 or --clock wall")
    torch.set_num_threads(args.threads)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    torch.manual_seed(0)

    default_shapes = default_drconv_shapes()
    in_default = {s: (s.in_channels, s.out_channels, s.size) in default_shapes for s in SHAPES}
    if not any(in_default.values()):
        parser.error(f"the default backbone's DRConv shapes {sorted(default_shapes)} are not in SHAPES")
    shapes = [s for s in SHAPES if in_default[s]] if args.quick else list(SHAPES)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {args.clock} clock, "
        f"region_num={args.region_num}, float32, CPU"
    )
    header = (
        f"{'layer':<16} {'C->O':>9} {'HxW':>5} {'batch':>5} {'conv infer ms':>13} {'infer ratio':>11} "
        f"{'conv train ms':>13} {'train ratio':>11}"
    )
    print(header)
    print("-" * len(header))
    for shape in shapes:
        conv = nn.Conv2d(shape.in_channels, shape.out_channels, 1, bias=False)
        drconv = DRConv2d(shape.in_channels, shape.out_channels, 1, region_num=args.region_num)
        for batch in args.batches:
            x = torch.randn(batch, shape.in_channels, shape.size, shape.size)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            repeats = _repeats(batch, shape.size, args.quick)
            conv.eval()
            drconv.eval()
            t_conv_inf, t_dr_inf = _median_pair(
                _inference(conv, x), _inference(drconv, x), repeats, max(2, repeats // 10), clock
            )
            conv.train()
            drconv.train()
            grad_out = torch.randn(batch, shape.out_channels, shape.size, shape.size)
            t_conv_tr, t_dr_tr = _median_pair(
                _train_step(conv, x, grad_out),
                _train_step(drconv, x, grad_out),
                repeats,
                max(2, repeats // 10),
                clock,
            )
            print(
                f"{shape.name + ('*' if in_default[shape] else ''):<16} "
                f"{f'{shape.in_channels}->{shape.out_channels}':>9} "
                f"{shape.size:>5} {batch:>5} {t_conv_inf * 1e3:>13.3f} {t_dr_inf / t_conv_inf:>11.2f} "
                f"{t_conv_tr * 1e3:>13.3f} {t_dr_tr / t_conv_tr:>11.2f}"
            )

    print()
    print(f"{'params C->O':<12} {'Conv2d':>8} {'DRConv2d':>9} {'ratio':>6} {'naive m^2*C*O generator':>24}")
    m = args.region_num
    for c, o in sorted({(s.in_channels, s.out_channels) for s in shapes}):
        plain = c * o
        dynamic = sum(p.numel() for p in DRConv2d(c, o, 1, region_num=m).parameters())
        print(f"{f'{c}->{o}':<12} {plain:>8} {dynamic:>9} {dynamic / plain:>6.2f} {m * m * c * o:>24}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
