"""Micro-batching: one network serves the images of all concurrent requests, on a few worker threads.

A request hands its images (each face, and its mirror with the flip) to `NetworkBatcher.features` and waits.
With `split`, each image is queued on its own and free workers share them: a lone request's face and mirror
run on two cores at once (lower latency). Without it (the caller knows the other cores are busy, e.g. with
other requests' detection) the request's images stay together. A free worker takes queued chunks up to
`max_images` images, leaving an equal share of chunks to the other free workers; on a busy server chunks pile
up and run together (less network CPU per face: README "Batching faces across requests"). A worker that took
fewer than `max_images` may wait up to `wait_ms` for more.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


class BatcherClosedError(RuntimeError):
    """The batcher was closed before the images ran (the server is shutting down)."""


@dataclass
class _Request:
    """One caller's images (N, 3, H, W); once done, their features (N, D) or the error that stopped them."""

    images: torch.Tensor
    features: list[torch.Tensor | None] = field(init=False)
    remaining: int = field(init=False)
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.features = [None] * len(self.images)
        self.remaining = len(self.images)


class NetworkBatcher:
    """Runs `network` (B, 3, H, W) -> (B, D) for many callers on `workers` threads (`threads` torch threads
    each)."""

    def __init__(
        self,
        network: Callable[[torch.Tensor], torch.Tensor],
        workers: int,
        max_images: int,
        wait_ms: float = 0.0,
        threads: int = 1,
    ) -> None:
        if workers < 1 or max_images < 1 or wait_ms < 0:
            raise ValueError("workers and max_images must be >= 1 and wait_ms >= 0")
        self.network = network
        self.max_images = max_images
        self.wait_s = wait_ms / 1000
        self.batch_sizes: deque[int] = deque(maxlen=1024)  # recent batch sizes, for tests and benchmarks
        self._queue: deque[_Chunk] = deque()
        self._changed = threading.Condition()
        self._idle = 0
        self._closed = False
        self.workers = [
            threading.Thread(target=self._work, args=(threads,), name=f"drface-network-{i}", daemon=True)
            for i in range(workers)
        ]
        for worker in self.workers:
            worker.start()

    def features(self, images: torch.Tensor, split: bool = True) -> torch.Tensor:
        """(N, 3, H, W) float -> (N, D) network outputs, row i for image i; blocks until all have run.

        `split`: the images may run on different workers (each its own chunk); else chunks of up to
        `max_images`. Raises whatever the network raised on a batch holding these images, or
        BatcherClosedError.
        """
        if len(images) == 0:
            raise ValueError("expected at least one image")
        request = _Request(images)
        step = 1 if split else self.max_images
        chunks = [(request, start, min(start + step, len(images))) for start in range(0, len(images), step)]
        with self._changed:
            if self._closed:
                raise BatcherClosedError("the network batcher is closed")
            self._queue.extend(chunks)
            self._changed.notify(len(chunks))
        request.done.wait()
        if request.error is not None:
            raise request.error
        return torch.stack(request.features)  # type: ignore[arg-type]

    def close(self) -> None:
        """Stop the workers; images still queued fail with BatcherClosedError."""
        with self._changed:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._changed.notify_all()
        for chunk in pending:
            self._finish(chunk, None, BatcherClosedError("the network batcher was closed"))
        for worker in self.workers:
            if worker is not threading.current_thread():
                worker.join(timeout=5)

    # -- workers --------------------------------------------------------------------------------------
    def _work(self, threads: int) -> None:
        torch.set_num_threads(threads)  # per thread in some OpenMP builds
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                with torch.inference_mode():
                    outputs = self.network(torch.cat([request.images[a:b] for request, a, b in batch]))
            except BaseException as exc:  # the callers re-raise it; the worker lives on
                for chunk in batch:
                    self._finish(chunk, None, exc)
                continue
            sizes = [b - a for _, a, b in batch]
            self.batch_sizes.append(sum(sizes))
            for chunk, rows in zip(batch, outputs.split(sizes), strict=True):
                self._finish(chunk, rows, None)

    def _take(self) -> list[_Chunk] | None:
        """The next batch of chunks: this worker's share of the queue, at most `max_images` images (or one
        chunk), after waiting up to `wait_s` for a fuller one."""
        with self._changed:
            self._idle += 1
            while not self._queue and not self._closed:
                self._changed.wait()
            self._idle -= 1
            if self._closed:
                return None
            # Leave an equal share to the workers that are free now (this one no longer counts as free).
            share = math.ceil(len(self._queue) / (self._idle + 1))
            batch = [self._queue.popleft()]
            images = _size(batch[0])
            deadline = time.monotonic() + self.wait_s
            while not self._closed:
                if self._queue:
                    if len(batch) >= share and self._idle:  # a free worker takes the rest
                        break
                    if images + _size(self._queue[0]) > self.max_images:
                        break
                    batch.append(self._queue.popleft())
                    images += _size(batch[-1])
                    continue
                remaining = deadline - time.monotonic()
                if images >= self.max_images or remaining <= 0 or not self._changed.wait(remaining):
                    break
            return batch

    def _finish(self, chunk: _Chunk, rows: torch.Tensor | None, error: BaseException | None) -> None:
        request, start, stop = chunk
        with self._changed:
            if error is not None:
                request.error = request.error or error
            elif rows is not None:
                request.features[start:stop] = list(rows)
            request.remaining -= stop - start
            finished = request.remaining == 0
        if finished:
            request.done.set()


_Chunk = tuple[_Request, int, int]
"""Rows [start, stop) of a request's images, run together."""


def _size(chunk: _Chunk) -> int:
    return chunk[2] - chunk[1]
