"""MobileFaceNet (Chen et al. 2018) for 112x112 aligned faces, with DRConv in configurable pointwise convs.

The network follows the paper's table; `BackboneConfig` chooses which bottleneck stages have their 1x1
expansion and/or projection convs replaced by `DRConv2d`. With `drconv=False` the same places hold plain
`nn.Conv2d` (same layer structure, same module names), which is the ablation baseline.

Shapes, 112x112 input (paper table, t = expansion, c = channels, n = repeats, s = stride of the first repeat):

    input      operator              t    c    n  s   name
    112x112x3  conv3x3               -    64   1  2   stem
    56x56x64   depthwise conv3x3     -    64   1  1   stem_dw
    56x56x64   bottleneck            2    64   5  2   stage1
    28x28x64   bottleneck            4    128  1  2   stage2
    14x14x128  bottleneck            2    128  6  1   stage3
    14x14x128  bottleneck            4    128  1  2   stage4
    7x7x128    bottleneck            2    128  2  1   stage5
    7x7x128    conv1x1               -    512  1  1   conv_last
    7x7x512    linear GDConv7x7      -    512  1  1   gdc
    1x1x512    linear conv1x1        -    D    1  1   embedding (+ BN)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from model.align import FACE_SIZE
from model.drconv import REGION_NUM, DRConv2d

StageName = Literal["stage1", "stage2", "stage3", "stage4", "stage5"]
PointwiseName = Literal["expand", "project"]

INPUT_SIZE = FACE_SIZE
"""Side of the aligned face crop the network expects (pixels); the 7x7 GDC head depends on it."""


class BackboneConfig(BaseModel):
    """Every architecture option of the backbone; stored in the model card to rebuild the network."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drconv: bool = Field(
        True,
        description="Use DRConv2d in the places chosen by `drconv_stages` x `drconv_convs`; "
        "False puts plain nn.Conv2d there (same structure, for ablations).",
    )
    region_num: int = Field(
        REGION_NUM, ge=2, le=32, description="Regions m per DRConv layer (8 in the paper)."
    )
    embedding_dim: int = Field(512, ge=8, le=4096, description="Length D of the output embedding.")
    width_multiplier: float = Field(
        1.0,
        gt=0.0,
        le=4.0,
        description="Scales every channel count of the table (rounded to a multiple of 8); "
        "the embedding length stays `embedding_dim`.",
    )
    drconv_stages: tuple[StageName, ...] = Field(
        ("stage1",),
        description="Bottleneck stages whose pointwise convs become DRConv: stage1 runs at 56->28 px, "
        "stage2 28->14, stage3 14, stage4 14->7, stage5 7. The default, stage1, gives the finest region map "
        "(28x28) within the cost targets (benchmarks/bench_backbone.py); later stages give coarse "
        "14x14 / 7x7 maps, where DRConv's per-layer fixed costs (guide, argmax, generator) weigh more "
        "against the conv.",
    )
    drconv_convs: tuple[PointwiseName, ...] = Field(
        ("project",),
        description="Which 1x1 convs of each chosen bottleneck become DRConv: the expansion (C -> tC) "
        "and/or the linear projection (tC -> c). Default: the projection only, one region map per block "
        "(like the official DRConv's one guide per block); adding the expansion doubles the DRConv layers "
        "and measured about 1.2x the plain network's batch-1 latency, too close to the 1.25x target.",
    )
    drconv_rank: int = Field(
        8,
        ge=1,
        description="Rank r of each DRConv's per-region filter update (regions differ from a shared base "
        "filter by rank-r terms). Pinned here, not left to the layer default, so saved models stay loadable.",
    )
    drconv_generator_channels: int = Field(
        16, ge=1, description="Hidden width g of each DRConv's filter generator (pinned like drconv_rank)."
    )

    def drconv_options(self) -> dict[str, int]:
        """Keyword arguments for every DRConv2d of the backbone."""
        return {
            "region_num": self.region_num,
            "rank": self.drconv_rank,
            "generator_channels": self.drconv_generator_channels,
        }


def _channels(channels: int, width_multiplier: float) -> int:
    """Channel count of the table scaled by the width multiplier, rounded to a multiple of 8 (>= 8)."""
    return max(8, int(round(channels * width_multiplier / 8.0)) * 8)


@dataclass(frozen=True)
class RegionMask:
    """Guided mask of one DRConv layer: `mask` int64 (B, h, w) with values in [0, regions)."""

    name: str
    regions: int
    mask: torch.Tensor


MaskSink = list[RegionMask] | None
"""Where a forward pass collects the DRConv masks; None when nobody asked for them (plain forward)."""


class ConvBNAct(nn.Sequential):
    """k x k conv (no bias) -> BatchNorm -> PReLU (omitted when `linear`); "same" padding unless given."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        linear: bool = False,
        padding: int | None = None,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2 if padding is None else padding,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if not linear:
            layers.append(nn.PReLU(out_channels))
        super().__init__(*layers)


class Pointwise(nn.Module):
    """1x1 conv (plain or DRConv) -> BatchNorm -> PReLU (omitted when `linear`).

    The conv sits at `self.conv` in both variants, so plain and DRConv networks share module names
    outside the conv itself.
    """

    def __init__(
        self,
        name: str,
        in_channels: int,
        out_channels: int,
        linear: bool,
        drconv: dict[str, int] | None,
    ) -> None:
        """`drconv`: DRConv2d keyword arguments (region_num, ...) to make the conv dynamic, None for plain."""
        super().__init__()
        self.name = name
        self.conv: nn.Module
        if drconv is not None:
            self.conv = DRConv2d(in_channels, out_channels, 1, **drconv)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.Identity() if linear else nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor, masks: MaskSink = None) -> torch.Tensor:
        """(B, C, H, W) -> (B, O, H, W); appends this layer's RegionMask to `masks` when given."""
        if masks is not None and isinstance(self.conv, DRConv2d):
            y, mask = self.conv(x, return_mask=True)
            masks.append(RegionMask(self.name, self.conv.region_num, mask))
        else:
            y = self.conv(x)
        return self.act(self.bn(y))


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expand (PReLU) -> 3x3 depthwise stride s (PReLU) -> linear 1x1 project.

    Residual connection when stride is 1 and the channel count is unchanged.
    """

    def __init__(
        self,
        name: str,
        in_channels: int,
        out_channels: int,
        expansion: int,
        stride: int,
        dynamic: tuple[PointwiseName, ...],
        drconv: dict[str, int],
    ) -> None:
        """`dynamic`: which pointwise convs are DRConv2d, built with keyword arguments `drconv`."""
        super().__init__()
        hidden = in_channels * expansion
        self.expand = Pointwise(
            f"{name}.expand",
            in_channels,
            hidden,
            linear=False,
            drconv=drconv if "expand" in dynamic else None,
        )
        self.depthwise = ConvBNAct(hidden, hidden, 3, stride=stride, groups=hidden)
        self.project = Pointwise(
            f"{name}.project",
            hidden,
            out_channels,
            linear=True,
            drconv=drconv if "project" in dynamic else None,
        )
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor, masks: MaskSink = None) -> torch.Tensor:
        """(B, C, H, W) -> (B, c, H/s, W/s)."""
        y = self.project(self.depthwise(self.expand(x, masks)), masks)
        return x + y if self.residual else y


class MobileFaceNet(nn.Module):
    """(B, 3, 112, 112) float face crops, RGB in [-1, 1] -> (B, D) embeddings (not normalised)."""

    # (name, expansion t, output channels c, repeats n, stride s of the first repeat): the paper's table.
    STAGES: tuple[tuple[StageName, int, int, int, int], ...] = (
        ("stage1", 2, 64, 5, 2),
        ("stage2", 4, 128, 1, 2),
        ("stage3", 2, 128, 6, 1),
        ("stage4", 4, 128, 1, 2),
        ("stage5", 2, 128, 2, 1),
    )

    def __init__(self, config: BackboneConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else BackboneConfig()
        cfg = self.config

        def width(channels: int) -> int:
            return _channels(channels, cfg.width_multiplier)

        self.stem = ConvBNAct(3, width(64), 3, stride=2)
        self.stem_dw = ConvBNAct(width(64), width(64), 3, groups=width(64))

        drconv = cfg.drconv_options()
        blocks: list[Bottleneck] = []
        in_channels = width(64)
        for stage, expansion, channels, repeats, stride in self.STAGES:
            dynamic = cfg.drconv_convs if cfg.drconv and stage in cfg.drconv_stages else ()
            for i in range(repeats):
                blocks.append(
                    Bottleneck(
                        f"{stage}.{i}",
                        in_channels,
                        width(channels),
                        expansion,
                        stride if i == 0 else 1,
                        dynamic,
                        drconv,
                    )
                )
                in_channels = width(channels)
        self.blocks = nn.ModuleList(blocks)

        self.conv_last = ConvBNAct(in_channels, width(512), 1)
        self.gdc = ConvBNAct(width(512), width(512), 7, groups=width(512), linear=True, padding=0)
        self.embedding = nn.Conv2d(width(512), cfg.embedding_dim, 1, bias=False)
        self.embedding_bn = nn.BatchNorm2d(cfg.embedding_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _check_input(self, x: torch.Tensor) -> None:
        if (
            torch.jit.is_tracing()
        ):  # shapes are tensors in a trace: the check would warn and become a constant
            return
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != INPUT_SIZE or x.shape[3] != INPUT_SIZE:
            raise ValueError(
                f"MobileFaceNet expects (B, 3, {INPUT_SIZE}, {INPUT_SIZE}) face crops, got {tuple(x.shape)}"
            )

    def _forward(self, x: torch.Tensor, masks: MaskSink) -> torch.Tensor:
        self._check_input(x)
        x = self.stem_dw(self.stem(x))
        for block in self.blocks:
            x = block(x, masks)
        x = self.gdc(self.conv_last(x))
        return self.embedding_bn(self.embedding(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 112, 112) -> (B, D)."""
        return self._forward(x, None)

    def forward_with_masks(self, x: torch.Tensor) -> tuple[torch.Tensor, list[RegionMask]]:
        """One pass: (B, D) embeddings and the RegionMask of every DRConv layer, in network order."""
        masks: list[RegionMask] = []
        return self._forward(x, masks), masks

    def region_masks(self, x: torch.Tensor) -> list[RegionMask]:
        """Guided masks of every DRConv layer for (B, 3, 112, 112) input (empty for the plain network).

        Runs without autograd; call it in eval mode (in training mode BatchNorm would update its statistics).
        """
        with torch.no_grad():
            return self.forward_with_masks(x)[1]

    def drconv_input_shapes(self, batch: int = 1) -> dict[str, tuple[int, int, int, int]]:
        """Input shape (B, C, H, W) of every DRConv layer for a batch of 112x112 faces (for benchmarks)."""
        shapes: dict[str, tuple[int, int, int, int]] = {}
        handles = [
            layer.register_forward_pre_hook(
                lambda _module, inputs, name=name: shapes.__setitem__(name, tuple(inputs[0].shape))
            )
            for name, layer in self.drconv_layers()
        ]
        try:
            param = next(self.parameters())
            with torch.no_grad():
                was_training = self.training
                self.eval()
                self(torch.zeros(batch, 3, INPUT_SIZE, INPUT_SIZE, device=param.device, dtype=param.dtype))
                self.train(was_training)
        finally:
            for handle in handles:
                handle.remove()
        return shapes

    def drconv_layers(self) -> list[tuple[str, DRConv2d]]:
        """(name, layer) of every DRConv layer, in network order."""
        return [
            (module.name, module.conv)
            for module in self.modules()
            if isinstance(module, Pointwise) and isinstance(module.conv, DRConv2d)
        ]


def build_backbone(**options: object) -> MobileFaceNet:
    """The one way to make a backbone: keyword options are `BackboneConfig` fields (validated).

    `drconv=False` gives the same network with plain 1x1 convs in the DRConv places.
    """
    return MobileFaceNet(BackboneConfig(**options))
