"""The model and the photo -> face -> embedding / region-map jobs of the endpoints, run off the event loop.

`Engine` holds the network, its card and the detector, and runs each endpoint's job synchronously: the face
pipeline (`model.pipeline`: decode, detect, pick, align, tensor), then the network. It knows nothing of HTTP:
pipeline errors propagate and `app/errors.py` maps them. `InferenceGate` runs those jobs on a small thread
pool and admits at most `concurrency + max_queue` jobs at once; beyond that it refuses with `OverloadedError`
(429) instead of letting requests pile up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import cv2
import numpy as np
import torch
from torch import nn

from app.batcher import BatcherClosedError, NetworkBatcher
from app.errors import NotReadyError, OverloadedError
from app.settings import Settings
from model.artifact import DEFAULT_WEIGHTS, LoadedModel, ModelCard, load_artifact
from model.detect import FaceDetector
from model.embed import embed_faces, embed_with
from model.pipeline import (
    AlignedFace,
    ImageLimits,
    NoFaceError,
    faces_to_tensor,
    find_faces,
    given_crop,
    pick_face,
    read_faces,
)
from model.trace import trace_for_inference

logger = logging.getLogger("drface.app")
T = TypeVar("T")


@dataclass(frozen=True)
class EmbeddedFace:
    """A face of an uploaded image (`model.pipeline.AlignedFace`) and its embedding (D,) float32 unit-norm."""

    face: AlignedFace
    embedding: np.ndarray


@dataclass(frozen=True)
class LayerMask:
    """Guided mask of one DRConv layer for one face: `mask` (h, w) int64 with values in [0, regions)."""

    name: str
    regions: int
    mask: np.ndarray


class Engine:
    """Network + card + detector, and the synchronous jobs. Thread-safe: holds no per-call state.

    With `micro_batch` (`idle`, `always`), embeddings may run on the micro-batcher's worker threads
    (app/batcher.py); `close()` stops them.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        detector: FaceDetector,
        settings: Settings,
        in_flight: Callable[[], int] | None = None,
    ) -> None:
        self.model = loaded.model
        self.card: ModelCard = loaded.card
        self.detector = detector
        self.settings = settings
        self.limits = ImageLimits(settings.max_upload_bytes, settings.max_pixels)
        # Embeddings may come from a traced copy; region masks from the eager network (or onnxruntime).
        self.network: nn.Module = self.model
        self.mask_network: nn.Module = self.model
        if settings.backend == "onnxruntime":
            from model.export import onnx_network_for  # onnx and the exporter only for this backend

            onnx_network = onnx_network_for(loaded, settings.onnx_model, settings.thread_count())
            self.network = self.mask_network = onnx_network
        elif settings.trace_network:
            self.network = trace_for_inference(self.model)
        # Requests in progress (the inference gate's count): a lone one may spread its images over the cores.
        self.in_flight = in_flight or (lambda: 1)
        self.batcher: NetworkBatcher | None = None
        workers = settings.network_workers()
        if settings.micro_batch == "always" or (settings.micro_batch == "idle" and workers > 1):
            self.batcher = NetworkBatcher(
                self.network,
                workers=workers,
                max_images=settings.batch_max_images,
                wait_ms=settings.batch_wait_ms,
                threads=settings.thread_count(),
            )

    @classmethod
    def load(cls, settings: Settings, in_flight: Callable[[], int] | None = None) -> Engine:
        """Load the artifact named by the settings (default: the shipped one) and build the detector;
        `in_flight()` counts the requests in progress (default: always 1)."""
        threads = settings.thread_count()
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        loaded = load_artifact(settings.weights or DEFAULT_WEIGHTS)
        detector = FaceDetector(settings.detector_config())
        return cls(loaded, detector, settings, in_flight)

    # -- steps ------------------------------------------------------------------------------------------
    def find_faces(
        self, data: bytes, aligned: bool, limit: int | None = None, max_faces: int | None = None
    ) -> list[AlignedFace]:
        """The `limit` largest faces of the photo (all by default), largest first, aligned; see
        `model.pipeline.read_faces` (no face: NoFaceError)."""
        return read_faces(data, self.detector, self.limits, aligned=aligned, limit=limit, max_faces=max_faces)

    def embed(self, faces: list[AlignedFace]) -> list[EmbeddedFace]:
        """The faces with their embeddings, all computed in one network batch."""
        batch = faces_to_tensor([face.aligned for face in faces])
        if self._batched(len(batch)):
            run = partial(self.batcher.features, split=self.in_flight() <= 1)  # type: ignore[union-attr]
            try:
                embeddings = embed_with(run, batch, flip=self.settings.flip).numpy()
            except BatcherClosedError as exc:
                raise NotReadyError("the server is shutting down; retry on another replica") from exc
        else:
            embeddings = embed_faces(self.network, batch, flip=self.settings.flip).numpy()
        return [EmbeddedFace(face, embedding) for face, embedding in zip(faces, embeddings, strict=True)]

    def layer_masks(self, face: AlignedFace) -> list[LayerMask]:
        """Guided mask of every DRConv layer for this face (empty for a network without DRConv)."""
        with torch.inference_mode():
            masks = self.mask_network.region_masks(faces_to_tensor([face.aligned]))
        return [LayerMask(m.name, int(m.regions), m.mask[0].numpy()) for m in masks]

    # -- what the endpoints run -----------------------------------------------------------------------
    def embed_photo(self, data: bytes, aligned: bool) -> list[EmbeddedFace]:
        """/v1/embed: every face with its embedding, largest first, at most `max_faces`."""
        return self.embed(self.find_faces(data, aligned, max_faces=self.settings.max_faces))

    def verify_photos(
        self, data1: bytes, data2: bytes, aligned: bool
    ) -> tuple[EmbeddedFace, EmbeddedFace, float]:
        """/v1/verify: the largest face of each photo and their cosine similarity in [-1, 1]."""
        first, second = self.embed(
            [self._largest(data1, aligned, "image1"), self._largest(data2, aligned, "image2")]
        )
        similarity = float(np.dot(first.embedding, second.embedding))
        return first, second, similarity

    def region_map(self, data: bytes, aligned: bool, face_index: int) -> tuple[AlignedFace, list[LayerMask]]:
        """/v1/region-map: face number `face_index` (0 = largest) and its guided masks."""
        face = pick_face(self.find_faces(data, aligned, limit=face_index + 1), face_index)
        return face, self.layer_masks(face)

    def warm_up(self, runs: int) -> float:
        """Run detector, network (batch 1 and 2) and region masks `runs` times; returns the last run in ms."""
        image = np.full((250, 250, 3), 128, dtype=np.uint8)
        cv2.circle(image, (125, 125), 60, (90, 120, 170), -1)
        face = given_crop(np.ascontiguousarray(image[69:181, 69:181]))
        elapsed_ms = 0.0
        for _ in range(runs):
            start = time.perf_counter()
            find_faces(image, self.detector, no_face="empty")
            self.embed([face])
            self.embed([face, face])
            self.layer_masks(face)
            elapsed_ms = (time.perf_counter() - start) * 1000
        return elapsed_ms

    def close(self) -> None:
        """Stop the network workers (embeddings still waiting fail)."""
        if self.batcher is not None:
            self.batcher.close()

    def _batched(self, faces: int) -> bool:
        """Whether `faces` faces go through the micro-batcher (`micro_batch`, README 'Micro-batching')."""
        if self.batcher is None:
            return False
        if self.settings.micro_batch == "always":
            return True
        images = faces * (2 if self.settings.flip else 1)
        return images > 1 and self.in_flight() <= 1  # "idle": only a lone request gains from the spread

    def _largest(self, data: bytes, aligned: bool, field: str) -> AlignedFace:
        try:
            return self.find_faces(data, aligned, limit=1)[0]
        except NoFaceError as exc:
            raise NoFaceError(f"no face found in {field}") from exc


class InferenceGate:
    """Runs pipeline calls on a thread pool of `concurrency` threads with a bounded waiting line.

    At most `concurrency + max_queue` calls are admitted (running or waiting); a call beyond that raises
    OverloadedError at once. A call counts until its thread finishes, even if the client has gone away.
    """

    def __init__(self, concurrency: int, max_queue: int, retry_after_s: int, threads: int) -> None:
        self.capacity = concurrency + max_queue
        self.retry_after_s = retry_after_s
        self._executor = ThreadPoolExecutor(
            max_workers=concurrency,
            thread_name_prefix="drface-inference",
            initializer=_set_thread_count,
            initargs=(threads,),
        )
        self._lock = threading.Lock()
        self._admitted = 0

    @property
    def admitted(self) -> int:
        """Calls running or waiting now."""
        return self._admitted

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """Run `function(*args)` on the pool and await its result; OverloadedError when full."""
        with self._lock:
            if self._admitted >= self.capacity:
                raise OverloadedError(
                    f"server is busy ({self.capacity} requests in progress or waiting); retry shortly",
                    self.retry_after_s,
                )
            self._admitted += 1
        try:
            future: Future[T] = self._executor.submit(function, *args)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        """Stop taking calls; waiting calls are cancelled, running ones finish."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _release(self, _future: Future | None) -> None:
        with self._lock:
            self._admitted -= 1


def _set_thread_count(threads: int) -> None:
    # Intra-op thread settings are per calling thread in some OpenMP builds: repeat them in each worker.
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
