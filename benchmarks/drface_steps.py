"""The service's one-photo pipeline, step by step, for the benchmarks that time it outside the server.

decode -> detect -> align (largest face first, every face for /v1/embed) -> tensor -> network (image + flip).
Each step is the function the service itself calls, with the service's default settings, threads and traced
network, so a benchmark that times `DrfaceSteps` times what `drface serve` runs.

This file is the benchmarks' only way into the pipeline's internals. Issue #20 moves `faces_to_tensor` to
`model.pipeline` and `trace_for_inference` to `model.trace`: re-point the imports below and nothing else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch import nn

from app.engine import trace_for_inference
from app.settings import Settings
from model.align import align_face, faces_to_tensor
from model.artifact import DEFAULT_WEIGHTS, load_artifact
from model.decode import decode_image
from model.detect import DetectorConfig, FaceDetector
from model.embed import embed_faces

STEPS = ("decode", "detect", "align", "tensor", "network")


@dataclass
class StepTimes:
    """Milliseconds per step of one call, in `STEPS` order (a step that did not run is absent)."""

    ms: dict[str, float] = field(default_factory=dict)

    def add(self, step: str, start: float) -> float:
        """Record the time since `start` (perf_counter seconds) under `step`; returns perf_counter now."""
        now = time.perf_counter()
        self.ms[step] = self.ms.get(step, 0.0) + (now - start) * 1000
        return now


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
        self.detector = FaceDetector(detector_config or DetectorConfig(num_threads=1))

    def decode(self, data: bytes) -> np.ndarray:
        """Photo bytes -> (H, W, 3) uint8 BGR, within the service's upload and pixel limits."""
        return decode_image(data, self.settings.max_upload_bytes, self.settings.max_pixels)

    def tensor(self, faces: list[np.ndarray]) -> torch.Tensor:
        """(112, 112, 3) uint8 BGR aligned faces -> (N, 3, 112, 112) float32 RGB in [-1, 1]."""
        return faces_to_tensor(faces)

    def network(self, batch: torch.Tensor, flip: bool = True) -> np.ndarray:
        """(N, 3, 112, 112) network input -> (N, D) float32 unit-norm embeddings (`flip`: image + mirror)."""
        return embed_faces(self.network_module, batch, flip=flip).numpy()

    def embed_photo(
        self, data: bytes, limit: int | None = None, flip: bool = True, times: StepTimes | None = None
    ) -> np.ndarray:
        """/v1/embed's work on one photo: (N, D) embeddings of its `limit` largest faces (all by default;
        (0, D) when it has none). With `times`, each step's milliseconds are added to it."""
        times = times if times is not None else StepTimes()
        start = time.perf_counter()
        image = self.decode(data)
        start = times.add("decode", start)
        detections = self.detector.detect(image)[:limit]
        start = times.add("detect", start)
        if not detections:
            return np.zeros((0, self.embedding_dim), np.float32)
        aligned = [align_face(image, d.landmarks) for d in detections]
        start = times.add("align", start)
        batch = self.tensor(aligned)
        start = times.add("tensor", start)
        embeddings = self.network(batch, flip=flip)
        times.add("network", start)
        return embeddings

    def verify_photos(
        self, data1: bytes, data2: bytes, flip: bool = True, times: StepTimes | None = None
    ) -> np.ndarray:
        """/v1/verify's work: (2, D) embeddings of the two photos' largest faces, embedded in one batch
        (their dot product is the similarity)."""
        times = times if times is not None else StepTimes()
        aligned = []
        for data in (data1, data2):
            start = time.perf_counter()
            image = self.decode(data)
            start = times.add("decode", start)
            detections = self.detector.detect(image)
            start = times.add("detect", start)
            if not detections:
                raise ValueError("no face found")
            aligned.append(align_face(image, detections[0].landmarks))
            times.add("align", start)
        start = time.perf_counter()
        batch = self.tensor(aligned)
        start = times.add("tensor", start)
        embeddings = self.network(batch, flip=flip)
        times.add("network", start)
        return embeddings
