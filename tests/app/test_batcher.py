"""NetworkBatcher: each caller gets its own images' outputs, batches stay bounded, work is shared, errors
reach the caller, and the served network through it gives the embeddings of `embed_faces`."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch import nn

from app.batcher import BatcherClosedError, NetworkBatcher
from model import build_backbone, embed_faces
from model.embed import embed_with
from model.trace import trace_for_inference


class Recorder(nn.Module):
    """Output row = the image's mean pixel and its first pixel; records each call's batch size and thread."""

    def __init__(self, delay_s: float = 0.0, fail_on: float | None = None) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.calls: list[tuple[int, str]] = []
        self.lock = threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.lock:
            self.calls.append((len(x), threading.current_thread().name))
        if self.fail_on is not None and bool((x[:, 0, 0, 0] == self.fail_on).any()):
            raise RuntimeError("network failed on this batch")
        time.sleep(self.delay_s)
        return torch.stack([x.mean(dim=(1, 2, 3)), x[:, 0, 0, 0]], dim=1)


def images(*values: float) -> torch.Tensor:
    """(N, 3, 4, 4) images, image i filled with values[i]."""
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).clone()


def test_concurrent_callers_each_get_their_own_rows_in_bounded_batches():
    network = Recorder(delay_s=0.005)
    batcher = NetworkBatcher(network, workers=2, max_images=4)
    try:
        with ThreadPoolExecutor(8) as pool:
            requests = [images(*(100 * caller + i for i in range(1 + caller % 3))) for caller in range(40)]
            results = list(pool.map(batcher.features, requests))
    finally:
        batcher.close()
    for request, result in zip(requests, results, strict=True):
        assert torch.equal(result[:, 0], request[:, 0, 0, 0])
    sizes = [size for size, _ in network.calls]
    assert sum(sizes) == sum(len(r) for r in requests)
    assert max(sizes) <= 4
    assert max(sizes) > 1, "a busy batcher should batch images of different callers"


def test_a_lone_request_is_split_between_free_workers():
    network = Recorder(delay_s=0.05)
    batcher = NetworkBatcher(network, workers=2, max_images=8)
    try:
        time.sleep(0.05)  # both workers waiting
        batcher.features(images(1.0, 2.0))
    finally:
        batcher.close()
    assert [size for size, _ in network.calls] == [1, 1]
    assert len({thread for _, thread in network.calls}) == 2


def test_unsplit_images_stay_together_in_chunks_of_the_cap():
    network = Recorder(delay_s=0.01)
    batcher = NetworkBatcher(network, workers=2, max_images=4)
    try:
        time.sleep(0.05)
        result = batcher.features(images(*range(6)), split=False)
        assert batcher.features(images(7.0, 8.0), split=False)[:, 0].tolist() == [7.0, 8.0]
    finally:
        batcher.close()
    assert torch.equal(result[:, 0], torch.arange(6.0))
    assert sorted(size for size, _ in network.calls) == [2, 2, 4]


def test_one_free_worker_takes_the_whole_queue_up_to_the_cap():
    network = Recorder()
    batcher = NetworkBatcher(network, workers=1, max_images=3)
    try:
        time.sleep(0.05)
        result = batcher.features(images(*range(7)))
    finally:
        batcher.close()
    assert torch.equal(result[:, 0], torch.arange(7.0))
    assert [size for size, _ in network.calls] == [3, 3, 1]


def test_wait_ms_gathers_a_later_callers_images():
    network = Recorder()
    batcher = NetworkBatcher(network, workers=1, max_images=8, wait_ms=300)
    try:
        time.sleep(0.05)
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(batcher.features, images(1.0))
            time.sleep(0.05)
            second = pool.submit(batcher.features, images(2.0))
            assert first.result()[0, 0] == 1.0 and second.result()[0, 0] == 2.0
    finally:
        batcher.close()
    assert [size for size, _ in network.calls] == [2]


def test_a_network_error_reaches_every_caller_of_its_batch_and_the_workers_live_on():
    network = Recorder(fail_on=13.0)
    batcher = NetworkBatcher(network, workers=1, max_images=8)
    try:
        with pytest.raises(RuntimeError, match="network failed"):
            batcher.features(images(13.0, 1.0))
        assert batcher.features(images(5.0))[0, 0] == 5.0
    finally:
        batcher.close()


def test_closed_batcher_refuses_and_fails_what_waits():
    gate = threading.Event()

    class Blocking(Recorder):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            gate.wait(5)
            return super().forward(x)

    batcher = NetworkBatcher(Blocking(), workers=1, max_images=1)
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(batcher.features, images(1.0))
        time.sleep(0.05)
        waiting = pool.submit(batcher.features, images(2.0))
        time.sleep(0.05)
        closer = pool.submit(batcher.close)
        time.sleep(0.05)
        gate.set()
        closer.result(timeout=10)
        assert running.result(timeout=5)[0, 0] == 1.0
        with pytest.raises(BatcherClosedError):
            waiting.result(timeout=5)
    with pytest.raises(BatcherClosedError):
        batcher.features(images(3.0))


@pytest.mark.parametrize("bad", [dict(workers=0), dict(max_images=0), dict(wait_ms=-1.0)])
def test_bad_settings_are_refused(bad):
    options = dict(workers=1, max_images=8, wait_ms=0.0) | bad
    with pytest.raises(ValueError):
        NetworkBatcher(Recorder(), **options)


def test_served_network_through_the_batcher_matches_embed_faces():
    torch.manual_seed(0)
    model = build_backbone().eval()
    traced = trace_for_inference(model)
    faces = torch.rand(5, 3, 112, 112) * 2 - 1
    batcher = NetworkBatcher(traced, workers=2, max_images=3)
    try:
        with ThreadPoolExecutor(5) as pool:
            rows = list(pool.map(lambda i: embed_with(batcher.features, faces[i : i + 1]), range(5)))
    finally:
        batcher.close()
    expected = embed_faces(model, faces)
    assert (torch.cat(rows) - expected).abs().max() < 1e-4
