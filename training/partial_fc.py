"""Model-parallel margin classifier (PartialFC-style, without negative-class sampling).

Each of the w ranks holds the class centres [start, stop) of `distributed.shard_range` (about N/w rows), so
the classifier of hundreds of thousands of identities never sits on one device. A step:

1. all-gather the embeddings (B = w * b, D) and labels of every rank (the gather keeps the autograd graph);
2. local cosine logits (B, N/w) against this rank's centres; labels outside the shard become -1 (NO_TARGET),
   so `model.heads.apply_margin` puts the margin only where the true class lives;
3. softmax cross-entropy over all N classes from two all-reduces (row max, row sum of exp) plus one for the
   target logit; its backward is the exact softmax gradient (p - onehot) / B on each shard.

With one process it is an ordinary fully connected margin head and `F.cross_entropy`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from model.heads import NO_TARGET, apply_margin, cosine_logits
from training.distributed import DistContext, all_reduce_sum, gather_rows, shard_range


class _GatherWithGrad(torch.autograd.Function):
    """(b, D) per rank -> (w*b, D) on every rank; backward sums the row gradients over ranks and keeps ours.

    The kept slice is multiplied by w: DistributedDataParallel *averages* backbone gradients over ranks, while
    the global-batch loss needs their *sum* (each rank's backbone saw only its own rows).
    """

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor, world_size: int, rank: int) -> torch.Tensor:
        ctx.world_size, ctx.rank, ctx.rows = world_size, rank, local.shape[0]
        parts = [torch.empty_like(local) for _ in range(world_size)]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        ours = grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]
        return ours * ctx.world_size, None, None


class _ShardedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy over the `counted` rows of logits split by columns across ranks;
    labels -1 = target elsewhere."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, labels: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
        logits32 = logits.float()
        row_max = logits32.max(dim=1).values
        dist.all_reduce(row_max, op=dist.ReduceOp.MAX)
        exp = torch.exp(logits32 - row_max[:, None])
        row_sum = exp.sum(dim=1)
        dist.all_reduce(row_sum, op=dist.ReduceOp.SUM)
        has_target = labels != NO_TARGET
        rows = torch.nonzero(has_target).squeeze(1)
        target = torch.zeros_like(row_max)
        target[rows] = logits32[rows, labels[rows]]
        dist.all_reduce(target, op=dist.ReduceOp.SUM)
        weight = counted.float() / counted.sum().clamp(min=1)
        loss = ((torch.log(row_sum) + row_max - target) * weight).sum()
        probs = exp / row_sum[:, None]
        ctx.save_for_backward(probs, labels, weight)
        ctx.logits_dtype = logits.dtype
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        probs, labels, weight = ctx.saved_tensors
        grad = probs.clone()
        rows = torch.nonzero(labels != NO_TARGET).squeeze(1)
        grad[rows, labels[rows]] -= 1.0
        grad *= grad_loss * weight[:, None]
        return grad.to(ctx.logits_dtype), None, None


class ShardedMarginHead(nn.Module):
    """Class centres of this rank (N_local, D) + combined margin + (distributed) cross-entropy.

    `forward(embeddings (b, D), labels (b,)) -> (loss scalar, accuracy scalar)` where both are over the global
    batch's labelled rows: a label of -1 (training.data.UNLABELLED) marks a face without identity, which adds
    nothing here. `scale` and the margins are plain attributes so the loop can schedule them.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        context: DistContext,
        scale: float,
        margin_mul: float = 1.0,
        margin_arc: float = 0.5,
        margin_cos: float = 0.0,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        self.context = context
        self.num_classes = num_classes
        self.start, self.stop = shard_range(num_classes, context.rank, context.world_size)
        # Every rank draws the same full matrix and keeps its rows: the result does not depend on world size.
        full = (
            torch.randn(num_classes, embedding_dim, generator=torch.Generator().manual_seed(init_seed)) * 0.01
        )
        self.weight = nn.Parameter(full[self.start : self.stop].clone())
        self.scale = scale
        self.margin_mul = margin_mul
        self.margin_arc = margin_arc
        self.margin_cos = margin_cos

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        distributed = self.context.distributed
        if distributed:
            embeddings = _GatherWithGrad.apply(embeddings, self.context.world_size, self.context.rank)
            labels = gather_rows(labels, self.context)
        in_shard = (labels >= self.start) & (labels < self.stop)
        local_labels = torch.where(in_shard, labels - self.start, torch.full_like(labels, NO_TARGET))
        cos = cosine_logits(embeddings.float(), self.weight.float())
        logits = apply_margin(
            cos,
            local_labels,
            scale=self.scale,
            margin_mul=self.margin_mul,
            margin_arc=self.margin_arc,
            margin_cos=self.margin_cos,
        )
        labelled = labels >= 0
        if distributed:
            loss = _ShardedCrossEntropy.apply(logits, local_labels, labelled)
        elif bool(labelled.all()):
            loss = F.cross_entropy(logits, labels)
        else:  # the mean over labelled rows only; 0 (with a graph) when the batch has none
            loss = (F.cross_entropy(logits, labels.clamp(min=0), reduction="none") * labelled).sum() / (
                labelled.sum().clamp(min=1)
            )
        return loss, self._accuracy(cos.detach(), labels, labelled)

    def _accuracy(self, cos: torch.Tensor, labels: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
        """Fraction of labelled rows whose nearest class centre (plain cosine, no margin) is the label."""
        best, index = cos.max(dim=1)
        if self.context.distributed:
            candidates = [torch.empty_like(best) for _ in range(self.context.world_size)]
            dist.all_gather(candidates, best.contiguous())
            owners = torch.stack(candidates).argmax(dim=0)  # rank holding each row's best class
            predicted = torch.where(owners == self.context.rank, index + self.start, torch.zeros_like(index))
            dist.all_reduce(predicted, op=dist.ReduceOp.SUM)
        else:
            predicted = index
        return ((predicted == labels) & labelled).float().sum() / labelled.sum().clamp(min=1)

    # ---- checkpoint support: the full matrix, independent of the world size

    def full_weight(self) -> torch.Tensor:
        """(N, D) all class centres on every rank (a collective when distributed)."""
        return self.gather_rows_of(self.weight.detach())

    def gather_rows_of(self, shard: torch.Tensor) -> torch.Tensor:
        """Every rank's (N_local, ...) tensor shaped like the weight shard (e.g. its momentum) -> (N, ...)."""
        return gather_rows(shard, self.context)

    def shard_of(self, full: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a full (N, ...) tensor."""
        return full[self.start : self.stop]


def clip_grad_norm_(
    replicated: Iterable[nn.Parameter],
    sharded: Iterable[nn.Parameter],
    max_norm: float | None,
    context: DistContext,
) -> torch.Tensor:
    """Clip the gradient norm of the whole model in place; returns the norm before clipping.

    `replicated` parameters (the DDP backbone) hold the same gradient on every rank; `sharded` ones (class
    centres) hold one slice per rank, so their squared norms are summed over ranks. None: only measure.
    """
    replicated, sharded = list(replicated), list(sharded)
    device = context.device

    def squared(params: list[nn.Parameter]) -> torch.Tensor:
        return sum(
            (p.grad.float().pow(2).sum() for p in params if p.grad is not None),
            torch.zeros((), device=device),
        )

    norm = torch.sqrt(squared(replicated) + all_reduce_sum(squared(sharded), context))
    if max_norm is not None:
        factor = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        for p in replicated + sharded:
            if p.grad is not None:
                p.grad.mul_(factor.to(p.grad.dtype))
    return norm
