"""Streaming batches: DataLoader worker processes decode and augment each batch from the files or the `.rec`.

For training sets that do not fit in RAM. Item `(epoch, step)` of the map-style `StreamingBatches` dataset
is one rank's whole part of global batch `step` of `epoch`: the same indices (`epoch_permutation`) and
augmentation draws (`batch_generator`) as the in-memory `BatchSource`, decoded by `read_face` from the same
bytes and augmented by the same `augment`, so the two paths give the same batches (bit for bit when the main
process also runs torch on one thread, as each worker does) and a resumed run continues exactly. Workers
build whole batches: with w workers, w x PREFETCH_BATCHES batches are in flight, each worker decoding
`batch_size / world_size` faces per item.

Workers are not forked from the training process: a fork copies the locks of its thread pools (OpenCV,
onnxruntime, OpenMP) as they are at that instant, and a child that touches one deadlocks (seen in the tests).
They are forked from a clean forkserver that has imported this module once (spawned where there is no
forkserver). One DataLoader pass walks the positions from where training starts onwards, across epochs, so
workers start once per session.

    `StreamingBatchSource.batch(epoch, step)` -> images (b, 3, 112, 112) float [-1, 1], labels (b,) int64,
    teacher embeddings (b, Dt) or None
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from model.pipeline import faces_to_tensor
from training.config import AugmentConfig
from training.data import BatchPlan, FaceRef, augment, read_face

PREFETCH_BATCHES = 2  # per worker


def worker_context() -> multiprocessing.context.BaseContext:
    """Forkserver with this module preloaded (workers start in ~0.1 s), else spawn (see the docstring)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def _single_threaded_worker(worker_id: int) -> None:
    """Each worker runs torch and OpenCV on one thread: w workers use w cores, not w x cores."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


@dataclass(frozen=True)
class Positions:
    """Sampler of training positions (epoch, step) from `start` on, without end (training stops asking)."""

    start: tuple[int, int]
    steps_per_epoch: int

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, step = self.start
        while True:
            yield epoch, step
            epoch, step = (epoch, step + 1) if step + 1 < self.steps_per_epoch else (epoch + 1, 0)


class StreamingBatches(BatchPlan, Dataset):
    """Map-style dataset whose item (epoch, step) is this rank's part of global batch `step` of `epoch`."""

    def __init__(
        self,
        refs: Sequence[FaceRef],
        labels: np.ndarray,
        batch_size: int,
        seed: int,
        augment_config: AugmentConfig,
        rank: int = 0,
        world_size: int = 1,
        teacher: np.ndarray | None = None,
    ) -> None:
        if len(refs) != len(labels):
            raise ValueError(f"{len(refs)} faces for {len(labels)} labels")
        super().__init__(labels, batch_size, seed, augment_config, rank, world_size, teacher)
        self.refs = refs

    def __getitem__(self, position: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images (b, 3, 112, 112) float [-1, 1], labels (b,), teacher (b, Dt); (0,) if not distilling)."""
        index, draws = self.rows(*position)
        faces = torch.from_numpy(np.stack([read_face(self.refs[i]) for i in index.tolist()]))
        images = augment(faces_to_tensor(faces), self.augment_config, draws)
        teacher = self.teacher[index] if self.teacher is not None else torch.empty(0)
        return images, self.labels[index], teacher


class StreamingBatchSource:
    """`BatchSource`'s interface over `StreamingBatches` and a DataLoader of `workers` processes.

    Batches must be asked for in order; asking for another (epoch, step) than the next one (a resume, a jump)
    starts a new DataLoader pass there.
    """

    def __init__(self, dataset: StreamingBatches, workers: int) -> None:
        self.dataset = dataset
        self.workers = workers
        self.steps = dataset.steps
        self._iterator: Iterator | None = None
        self._next: tuple[int, int] = (-1, -1)

    def _start(self, epoch: int, step: int) -> None:
        self._iterator = None  # shut the previous pass's workers down first
        loader = DataLoader(
            self.dataset,
            batch_size=None,
            sampler=Positions((epoch, step), self.steps),
            num_workers=self.workers,
            prefetch_factor=PREFETCH_BATCHES if self.workers else None,
            worker_init_fn=_single_threaded_worker if self.workers else None,
            multiprocessing_context=worker_context() if self.workers else None,
        )
        self._iterator = iter(loader)

    def batch(self, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """This rank's images (b, 3, 112, 112) float [-1, 1], labels (b,) int64 and teacher embeddings
        (b, Dt) or None, of global batch `step` of `epoch`."""
        if self._iterator is None or self._next != (epoch, step):
            self._start(epoch, step)
        assert self._iterator is not None
        images, labels, teacher = next(self._iterator)
        self._next = (epoch, step + 1) if step + 1 < self.steps else (epoch + 1, 0)
        return images, labels, teacher if teacher.numel() else None

    def close(self) -> None:
        """Stop the workers (they also stop when this object is garbage collected)."""
        self._iterator = None
