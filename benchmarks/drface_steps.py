"""The service's one-photo pipeline, step by step, for the benchmarks that time it outside the server.

decode -> detect -> align (largest face first, every face for /v1/embed) -> tensor -> network (image + flip).
Each step is the function the service itself calls, with the service's default settings, threads and traced
network, so a benchmark that times `DrfaceSteps` times what `drface serve` runs. The settings are read from
the DRFACE_* environment like the server's (DRFACE_TORCH_THREADS=1: one torch thread in both).

This file is the benchmarks' only way into the pipeline's internals.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import torch
from torch import nn

from app.settings import Settings
from model.align import align_face
from model.artifact import DEFAULT_WEIGHTS, load_artifact
from model.decode import decode_image
from model.detect import DetectorConfig, FaceDetector
from model.embed import embed_faces
from model.pipeline import faces_to_tensor
from model.trace import trace_for_inference

STEPS = ("decode", "detect", "align", "tensor", "network")


class StepTimes:
    """Wall and CPU milliseconds per step, in `STEPS` order (a step that did not run is absent).

    CPU time is this process's (all threads): unlike wall time it hardly grows when other programs take the
    cores, so on a shared machine it shows what a step costs.
    """

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self.cpu_ms: dict[str, float] = {}
        self.start()

    def start(self) -> None:
        """Start timing the next step now."""
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def add(self, step: str) -> None:
        """Add the time since the last `start` / `add` to `step`, and start the next step."""
        wall, cpu = time.perf_counter(), time.process_time()
        self.ms[step] = self.ms.get(step, 0.0) + (wall - self._wall) * 1000
        self.cpu_ms[step] = self.cpu_ms.get(step, 0.0) + (cpu - self._cpu) * 1000
        self._wall, self._cpu = wall, cpu


class DrfaceSteps:
    """The shipped model, detector and limits as `drface serve` builds them (default `Settings`)."""

    def __init__(
        self, settings: Settings | None = None, detector_config: DetectorConfig | None = None
    ) -> None:
        self.settings = settings or Settings()
        threads = self.settings.thread_count()
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        loaded = load_artifact(self.settings.weights or DEFAULT_WEIGHTS)
        self.model = loaded.model
        self.embedding_dim = loaded.card.embedding_dim
        self.network_module: nn.Module = (
            trace_for_inference(self.model) if self.settings.trace_network else self.model
        )
        self.detector = FaceDetector(detector_config or self.settings.detector_config())

    def decode(self, data: bytes) -> np.ndarray:
        """Photo bytes -> (H, W, 3) uint8 BGR, within the service's upload and pixel limits."""
        return decode_image(data, self.settings.max_upload_bytes, self.settings.max_pixels)

    def tensor(self, faces: list[np.ndarray]) -> torch.Tensor:
        """(112, 112, 3) uint8 BGR aligned faces -> (N, 3, 112, 112) float32 RGB in [-1, 1]."""
        return faces_to_tensor(faces)

    def network(self, batch: torch.Tensor, flip: bool | None = None) -> np.ndarray:
        """(N, 3, 112, 112) network input -> (N, D) float32 unit-norm embeddings (`flip`: image + mirror;
        None: as served, `DRFACE_FLIP`)."""
        flip = self.settings.flip if flip is None else flip
        return embed_faces(self.network_module, batch, flip=flip).numpy()

    def embed_photo(
        self, data: bytes, limit: int | None = None, flip: bool | None = None, times: StepTimes | None = None
    ) -> np.ndarray:
        """/v1/embed's work on one photo: (N, D) embeddings of its `limit` largest faces (all by default;
        (0, D) when it has none). With `times`, each step's milliseconds are added to it."""
        times = times if times is not None else StepTimes()
        times.start()
        image = self.decode(data)
        times.add("decode")
        detections = self.detector.detect(image)[:limit]
        times.add("detect")
        if not detections:
            return np.zeros((0, self.embedding_dim), np.float32)
        aligned = [align_face(image, d.landmarks) for d in detections]
        times.add("align")
        batch = self.tensor(aligned)
        times.add("tensor")
        embeddings = self.network(batch, flip=flip)
        times.add("network")
        return embeddings

    def verify_photos(
        self, data1: bytes, data2: bytes, flip: bool | None = None, times: StepTimes | None = None
    ) -> np.ndarray:
        """/v1/verify's work: (2, D) embeddings of the two photos' largest faces, embedded in one batch
        (their dot product is the similarity)."""
        times = times if times is not None else StepTimes()
        aligned = []
        for data in (data1, data2):
            times.start()
            image = self.decode(data)
            times.add("decode")
            detections = self.detector.detect(image)
            times.add("detect")
            if not detections:
                raise ValueError("no face found")
            aligned.append(align_face(image, detections[0].landmarks))
            times.add("align")
        times.start()
        batch = self.tensor(aligned)
        times.add("tensor")
        embeddings = self.network(batch, flip=flip)
        times.add("network")
        return embeddings
