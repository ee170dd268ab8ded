"""Parameter count and multiply-adds of the DRConv and the plain MobileFaceNet at 112x112, one image.

MAdds are counted with forward hooks from each layer's output shape (one multiply-add = one MAdd; BN, PReLU,
additions and pooling are not counted, as in the MobileNet / MobileFaceNet papers). A DRConv2d at inference is
counted as what it computes: the chosen filter's conv (O outputs), the guide conv (m outputs), the low-rank
region update (r projections + O x r per pixel) and the per-sample filter generator.

    python scripts/model_stats.py [--region-num 8] [--stages stage1 ...] [--convs expand project] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.drconv import DRConv2d  # noqa: E402
from model.mobilefacenet import INPUT_SIZE, BackboneConfig, MobileFaceNet  # noqa: E402


def conv_madds(conv: nn.Conv2d, out: torch.Tensor) -> int:
    """Multiply-adds of an nn.Conv2d producing `out` (B, O, H', W'), per image."""
    kh, kw = conv.kernel_size
    return out[0].numel() * (conv.in_channels // conv.groups) * kh * kw


def drconv_madds(layer: DRConv2d, out: torch.Tensor) -> dict[str, int]:
    """Inference multiply-adds of a DRConv2d producing `out` (B, O, H', W'), per image, by component."""
    kh, kw = layer.kernel_size
    pixels = out.shape[2] * out.shape[3]
    per_output = layer.in_channels * kh * kw
    g, m, r = layer.generator_channels, layer.region_num, layer.rank
    return {
        "conv": pixels * layer.out_channels * per_output,
        "guide": pixels * m * per_output,
        "low_rank": pixels * (r * per_output + layer.out_channels * r + r),
        "generator": kh * kw * layer.in_channels * g + g * kh * kw * m * r,
    }


def count(model: MobileFaceNet) -> dict[str, object]:
    """{'params', 'madds', 'madds_by_kind', 'drconv_params'} for one 112x112 image."""
    by_kind: dict[str, int] = defaultdict(int)
    handles = []

    def conv_hook(module: nn.Module, _inputs: object, out: torch.Tensor) -> None:
        by_kind["depthwise" if module.groups > 1 else "conv"] += conv_madds(module, out)

    def drconv_hook(module: nn.Module, _inputs: object, out: torch.Tensor) -> None:
        for key, value in drconv_madds(module, out).items():
            by_kind[f"drconv_{key}"] += value

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, DRConv2d):
            handles.append(module.register_forward_hook(drconv_hook))
    with torch.inference_mode():
        model.eval()(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE))
    for handle in handles:
        handle.remove()
    drconv_params = sum(p.numel() for _, layer in model.drconv_layers() for p in layer.parameters())
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "drconv_params": drconv_params,
        "drconv_layers": len(model.drconv_layers()),
        "madds": sum(by_kind.values()),
        "madds_by_kind": dict(sorted(by_kind.items())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = BackboneConfig()
    parser.add_argument("--region-num", type=int, default=defaults.region_num)
    parser.add_argument("--stages", nargs="+", default=list(defaults.drconv_stages))
    parser.add_argument("--convs", nargs="+", default=list(defaults.drconv_convs))
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    options = {"region_num": args.region_num, "drconv_stages": args.stages, "drconv_convs": args.convs}
    results = {
        "drconv": count(MobileFaceNet(BackboneConfig(drconv=True, **options))),
        "plain": count(MobileFaceNet(BackboneConfig(drconv=False, **options))),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    dr, plain = results["drconv"], results["plain"]
    print(f"placement: stages={args.stages} convs={args.convs} region_num={args.region_num}")
    print(f"{'':24}{'plain':>14}{'drconv':>14}{'ratio':>8}")
    print(f"{'params':24}{plain['params']:>14,}{dr['params']:>14,}{dr['params'] / plain['params']:>8.3f}")
    print(
        f"{'MAdds (112x112)':24}{plain['madds']:>14,}{dr['madds']:>14,}{dr['madds'] / plain['madds']:>8.3f}"
    )
    print(f"DRConv layers: {dr['drconv_layers']}, their params: {dr['drconv_params']:,}")
    for kind in sorted(set(plain["madds_by_kind"]) | set(dr["madds_by_kind"])):
        plain_kind, dr_kind = plain["madds_by_kind"].get(kind, 0), dr["madds_by_kind"].get(kind, 0)
        print(f"  MAdds {kind:17}{plain_kind:>14,}{dr_kind:>14,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
