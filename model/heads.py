"""Margin heads: the combined angular margin s * (cos(m1 * theta + m2) - m3) on the true class.

ArcFace = (m1, m2, m3) = (1, m, 0), CosFace = (1, 0, m), SphereFace-like = (m, 0, 0); any mix is allowed.
Every other class keeps s * cos(theta). The margin is part of the autograd graph (its gradient flows).

Where m1 * theta + m2 would pass pi, cos(m1 * theta + m2) would turn back up and reward a worse angle.
Beyond theta_max = (pi - m2) / m1 we continue with a CosFace-like line that is continuous and strictly
decreasing in theta:  cos(theta) - cos(theta_max) - 1  (equals -1 at theta_max, the value of the margin curve
there). This differs from insightface's `cos(theta) - m * sin(m)` fallback, which jumps at theta_max.

The split into `cosine_logits` (embeddings x class weights) and `apply_margin` (on given cosines) lets a
sharded classifier (PartialFC-style, each rank holding a slice of the class weights) reuse the margin: labels
of -1 mean "the true class is not on this shard", and such rows are left without margin.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

COS_EPS = 1e-6
"""cos(theta) is clamped to [-1 + eps, 1 - eps] before acos, whose derivative is infinite at +-1."""

NO_TARGET = -1
"""Label meaning "the true class of this row is not among these logits" (sharded classifier)."""


def _check_margins(scale: float, margin_mul: float, margin_arc: float, margin_cos: float) -> None:
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if margin_mul < 1:
        raise ValueError(f"margin_mul (m1) must be >= 1, got {margin_mul}")
    if not 0 <= margin_arc < math.pi:
        raise ValueError(f"margin_arc (m2, radians) must be in [0, pi), got {margin_arc}")
    if margin_cos < 0:
        raise ValueError(f"margin_cos (m3) must be >= 0, got {margin_cos}")


def margin_target_cos(
    cos: torch.Tensor, margin_mul: float = 1.0, margin_arc: float = 0.5, margin_cos: float = 0.0
) -> torch.Tensor:
    """Margin-penalised cosine of the true class, cos(m1 * theta + m2) - m3, same shape as `cos`.

    Uses the continuous CosFace-like continuation (module docstring) where m1 * theta + m2 > pi.
    """
    if margin_mul == 1.0 and margin_arc == 0.0:
        return cos - margin_cos  # pure CosFace: no acos needed, exact at cos = +-1
    theta = torch.acos(cos.clamp(-1.0 + COS_EPS, 1.0 - COS_EPS))
    theta_max = (math.pi - margin_arc) / margin_mul
    on_curve = torch.cos(margin_mul * theta + margin_arc)
    continuation = cos - (math.cos(theta_max) + 1.0)
    return torch.where(theta <= theta_max, on_curve, continuation) - margin_cos


def apply_margin(
    cos: torch.Tensor,
    labels: torch.Tensor,
    scale: float = 64.0,
    margin_mul: float = 1.0,
    margin_arc: float = 0.5,
    margin_cos: float = 0.0,
) -> torch.Tensor:
    """Logits from cosines: s * cos everywhere, s * (cos(m1 * theta + m2) - m3) at each row's label.

    cos: (B, N) cosine similarities in [-1, 1]; labels: (B,) int64 class index in [0, N), or -1 (NO_TARGET)
    for rows whose true class is not in these N columns. Returns (B, N) logits; `cos` is not modified.
    """
    _check_margins(scale, margin_mul, margin_arc, margin_cos)
    if cos.ndim != 2 or labels.shape != cos.shape[:1]:
        raise ValueError(
            f"expected cos (B, N) and labels (B,), got {tuple(cos.shape)} and {tuple(labels.shape)}"
        )
    if labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if bool(((labels < NO_TARGET) | (labels >= cos.shape[1])).any()):
        raise ValueError(f"labels must be in [0, {cos.shape[1]}) or {NO_TARGET}")
    margins = (margin_mul, margin_arc, margin_cos)
    rows = torch.nonzero(labels != NO_TARGET).squeeze(1)
    cols = labels[rows].long()
    # float32 at least: acos near +-1 in half precision loses the margin
    target = cos[rows, cols]
    target = margin_target_cos(target.to(torch.promote_types(target.dtype, torch.float32)), *margins)
    return cos.index_put((rows, cols), target.to(cos.dtype)) * scale


def cosine_logits(embeddings: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every embedding (B, D) with every class weight (N, D) -> (B, N)."""
    return F.linear(F.normalize(embeddings, dim=1), F.normalize(weight, dim=1))


class MarginHead(nn.Module):
    """Class-weight matrix (N, D) + combined margin: embeddings (B, D), labels (B,) -> logits (B, N).

    ArcFace: margin_mul=1, margin_arc=m, margin_cos=0 (default, s = 64, m = 0.5). CosFace: margin_arc=0,
    margin_cos=m. The margins are plain attributes, so a training loop may warm them up between steps.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        scale: float = 64.0,
        margin_arc: float = 0.5,
        margin_cos: float = 0.0,
        margin_mul: float = 1.0,
    ) -> None:
        super().__init__()
        if embedding_dim < 1 or num_classes < 1:
            raise ValueError(
                f"need embedding_dim >= 1 and num_classes >= 1, got {embedding_dim}, {num_classes}"
            )
        _check_margins(scale, margin_mul, margin_arc, margin_cos)
        self.scale = scale
        self.margin_arc = margin_arc
        self.margin_cos = margin_cos
        self.margin_mul = margin_mul
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, D) embeddings, (B,) labels in [0, N) or -1 -> (B, N) scaled logits for cross-entropy."""
        return apply_margin(
            cosine_logits(embeddings, self.weight),
            labels,
            scale=self.scale,
            margin_mul=self.margin_mul,
            margin_arc=self.margin_arc,
            margin_cos=self.margin_cos,
        )

    def extra_repr(self) -> str:
        n, d = self.weight.shape
        return (
            f"embedding_dim={d}, num_classes={n}, scale={self.scale}, margin_mul={self.margin_mul}, "
            f"margin_arc={self.margin_arc}, margin_cos={self.margin_cos}"
        )
