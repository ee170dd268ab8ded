"""Process-group set-up for `torchrun` and the few collectives training needs; a no-op in a plain process.

`torchrun --nproc_per_node=N -m app.cli train ...` sets RANK / WORLD_SIZE / LOCAL_RANK; without them training
runs as one process and nothing here touches `torch.distributed`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

COLLECTIVE_TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank in [0, world_size), its device, and whether a process group is up."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, checkpoints and the artifact."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """'auto' -> cuda:<local_rank> when CUDA is available, else cpu."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("runtime.device=cuda but CUDA is not available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup(requested_device: str) -> DistContext:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA); else stay single."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local_rank)
    if world_size <= 1:
        return DistContext(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # Rank 0 evaluates (CFP alignment the first time: minutes) while the others wait in a collective.
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    return DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=device,
        initialized=True,
    )


def teardown(context: DistContext) -> None:
    if context.initialized and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistContext) -> None:
    if context.distributed:
        dist.barrier()


def all_reduce_sum(value: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Sum of `value` over ranks (in place; returns it). Identity in a single process."""
    if context.distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def average_gradients(params: list[torch.nn.Parameter], context: DistContext) -> None:
    """Average the gradients of replicated parameters outside DDP over ranks (as DDP does); no-op alone."""
    if not context.distributed:
        return
    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            param.grad.div_(context.world_size)


def max_over_ranks(value: int, context: DistContext) -> int:
    """The largest `value` of all ranks (e.g. a received signal number, 0 for none), on every rank."""
    if not context.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=context.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def shard_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of the classes rank `rank` holds: contiguous, sizes differ by at most one."""
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def gather_rows(local: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Concatenate every rank's `local` (n_r, ...) along dim 0 in rank order (n_r may differ); no autograd."""
    if not context.distributed:
        return local
    sizes = [torch.zeros(1, dtype=torch.int64, device=local.device) for _ in range(context.world_size)]
    dist.all_gather(sizes, torch.tensor([local.shape[0]], dtype=torch.int64, device=local.device))
    longest = int(max(int(s.item()) for s in sizes))
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(context.world_size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[: int(size.item())] for part, size in zip(parts, sizes, strict=True)])
