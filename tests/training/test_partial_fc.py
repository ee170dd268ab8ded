"""Sharded margin classifier: with 2 gloo ranks, loss, accuracy and gradients equal the one-process head."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from training.distributed import DistContext, gather_rows, shard_range
from training.partial_fc import ShardedMarginHead, clip_grad_norm_

NUM_CLASSES, DIM, BATCH, WORLD = 11, 8, 6, 2  # 11 classes: unequal shards (6 + 5)
MARGINS = {"scale": 16.0, "margin_arc": 0.3, "margin_cos": 0.1}


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    embeddings = torch.randn(BATCH, DIM, generator=generator)
    # targets on both shards, including the shard edges, and one face without identity (-1)
    labels = torch.tensor([0, 10, 5, 6, -1, 6])
    return embeddings, labels


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _head_pass(context: DistContext) -> dict[str, object]:
    """Forward + backward of the head alone on this rank's rows of `_inputs()`."""
    head = ShardedMarginHead(DIM, NUM_CLASSES, context, init_seed=7, **MARGINS)
    embeddings, labels = _inputs()
    rows = slice(context.rank * BATCH // WORLD, (context.rank + 1) * BATCH // WORLD)
    local = embeddings[rows].clone().requires_grad_(True)
    loss, accuracy = head(local, labels[rows])
    loss.backward()
    return {
        "loss": loss.item(),
        "accuracy": accuracy.item(),
        "embedding_grad": local.grad.clone(),
        "weight_grad": gather_rows(head.weight.grad, context),
        "full_weight": head.full_weight(),
    }


def _train_step(context: DistContext, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """One SGD step of a small conv backbone (DDP when distributed) + sharded head, with global clipping."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, DIM))
    backbone = DistributedDataParallel(net) if context.distributed else net
    head = ShardedMarginHead(DIM, NUM_CLASSES, context, init_seed=7, **MARGINS)
    optimizer = torch.optim.SGD([*net.parameters(), head.weight], lr=0.5, momentum=0.9)
    loss, _ = head(backbone(images), labels)
    loss.backward()
    norm = clip_grad_norm_(net.parameters(), [head.weight], 0.05, context)  # small: clipping is active
    optimizer.step()
    return {"norm": norm, **{k: v.detach().clone() for k, v in net.state_dict().items()},
            "head": head.full_weight()}  # fmt: skip


def _worker(rank: int, port: int, results: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        context = DistContext(rank=rank, world_size=WORLD, initialized=True)
        images, labels = _step_inputs()
        rows = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        results[rank] = {
            "head": _head_pass(context),
            "step": _train_step(context, images[rows], labels[rows]),
        }
    finally:
        dist.destroy_process_group()


def _step_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(BATCH, 3, 16, 16, generator=torch.Generator().manual_seed(5)), _inputs()[1]


@pytest.fixture(scope="module")
def two_ranks() -> dict[int, dict]:
    """What each of 2 gloo ranks computed (one spawn for all tests)."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(_free_port(), results), nprocs=WORLD, join=True)
        return dict(results)


def test_shard_ranges_cover_all_classes_once():
    for classes in (1, 5, 11, 1000):
        for world in (1, 2, 3, 8):
            ranges = [shard_range(classes, r, world) for r in range(world)]
            assert ranges[0][0] == 0 and ranges[-1][1] == classes
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))


def test_unlabelled_rows_add_nothing_to_the_head_loss():
    head = ShardedMarginHead(DIM, NUM_CLASSES, DistContext(), init_seed=7, **MARGINS)
    embeddings, labels = _inputs()
    embeddings.requires_grad_(True)
    loss, accuracy = head(embeddings, labels)
    loss.backward()
    labelled = labels >= 0
    subset = embeddings.detach()[labelled].clone().requires_grad_(True)
    expected, expected_accuracy = head(subset, labels[labelled])
    torch.testing.assert_close(loss, expected)
    assert accuracy.item() == pytest.approx(expected_accuracy.item())
    assert torch.all(embeddings.grad[~labelled] == 0)
    only_unlabelled, _ = head(embeddings, torch.full_like(labels, -1))
    assert only_unlabelled.item() == 0.0


@pytest.mark.slow
def test_two_rank_sharded_head_matches_single_process_head(two_ranks):
    torch.set_num_threads(1)
    head = ShardedMarginHead(DIM, NUM_CLASSES, DistContext(), init_seed=7, **MARGINS)
    embeddings, labels = _inputs()
    embeddings.requires_grad_(True)
    loss, accuracy = head(embeddings, labels)
    loss.backward()

    results = {rank: two_ranks[rank]["head"] for rank in range(WORLD)}

    for rank in range(WORLD):
        assert results[rank]["loss"] == pytest.approx(loss.item(), rel=1e-5)
        assert results[rank]["accuracy"] == pytest.approx(accuracy.item())
        torch.testing.assert_close(results[rank]["full_weight"], head.weight.detach())
        torch.testing.assert_close(results[rank]["weight_grad"], head.weight.grad, rtol=1e-5, atol=1e-7)
    # each rank's embedding gradient is WORLD x the true one: DDP then averages the backbone over ranks
    gathered = torch.cat([results[r]["embedding_grad"] for r in range(WORLD)]) / WORLD
    torch.testing.assert_close(gathered, embeddings.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_ddp_step_with_sharded_head_equals_single_process_step(two_ranks):
    """DDP averages backbone gradients and the sharded head's gather compensates; clipping is global."""
    torch.set_num_threads(1)
    expected = _train_step(DistContext(), *_step_inputs())
    for rank in range(WORLD):
        for name, value in expected.items():
            torch.testing.assert_close(two_ranks[rank]["step"][name], value, rtol=1e-5, atol=1e-6, msg=name)
