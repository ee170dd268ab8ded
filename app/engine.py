"""The model and the photo -> face -> embedding / region-map pipeline, run off the event loop.

`Engine` holds the network, its card and the detector and runs the whole pipeline synchronously
(decode, detect, align, network) in one call. `InferenceGate` runs those calls on a small thread pool and
admits at most `concurrency + max_queue` jobs at once; beyond that it refuses with `OverloadedError` (429)
instead of letting requests pile up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from app.errors import InvalidRequestError, NoFaceError, OverloadedError, TooManyFacesError
from app.settings import Settings
from model.align import ARCFACE_TEMPLATE_112, FACE_SIZE, align_face, faces_to_tensor
from model.artifact import DEFAULT_WEIGHTS, LoadedModel, ModelCard, load_artifact
from model.decode import decode_image
from model.detect import DetectorConfig, FaceDetector
from model.embed import embed_faces
from model.mobilefacenet import INPUT_SIZE

logger = logging.getLogger("drface.app")
T = TypeVar("T")


@dataclass(frozen=True)
class Face:
    """One face of an uploaded image.

    box_xyxy: (4,) float pixels of the uploaded image; score: detector score in [0, 1] (None for a
    pre-aligned crop); landmarks: (5, 2) float pixels; aligned: (112, 112, 3) uint8 BGR crop the network saw;
    embedding: (D,) float32 unit-norm, or None where the endpoint does not compute it.
    """

    box_xyxy: np.ndarray
    score: float | None
    landmarks: np.ndarray
    aligned: np.ndarray
    embedding: np.ndarray | None = None


@dataclass(frozen=True)
class LayerMask:
    """Guided mask of one DRConv layer for one face: `mask` (h, w) int64 with values in [0, regions)."""

    name: str
    regions: int
    mask: np.ndarray


class Engine:
    """Network + card + detector, and the synchronous pipeline. Thread-safe: holds no per-call state."""

    def __init__(self, loaded: LoadedModel, detector: FaceDetector, settings: Settings) -> None:
        self.model = loaded.model
        self.card: ModelCard = loaded.card
        self.detector = detector
        self.settings = settings
        # Embeddings may come from a traced copy; region masks from the eager network (or onnxruntime).
        self.network: nn.Module = self.model
        self.mask_network: nn.Module = self.model
        if settings.backend == "onnxruntime":
            from model.export import onnx_network_for  # onnx and the exporter only for this backend

            onnx_network = onnx_network_for(loaded, settings.onnx_model, settings.thread_count())
            self.network = self.mask_network = onnx_network
        elif settings.trace_network:
            self.network = trace_for_inference(self.model)

    @classmethod
    def load(cls, settings: Settings) -> Engine:
        """Load the artifact named by the settings (default: the shipped one) and build the detector."""
        threads = settings.thread_count()
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        loaded = load_artifact(settings.weights or DEFAULT_WEIGHTS)
        # One onnxruntime thread: a larger intra-op pool spin-waits after each run and takes the cores the
        # network needs right after; on face-sized photos one thread detects about as fast.
        detector = FaceDetector(DetectorConfig(num_threads=1))
        return cls(loaded, detector, settings)

    # -- pipeline steps -------------------------------------------------------------------------------
    def decode(self, data: bytes) -> np.ndarray:
        """Photo bytes -> (H, W, 3) uint8 BGR, within the upload and pixel limits."""
        return decode_image(data, self.settings.max_upload_bytes, self.settings.max_pixels)

    def find_faces(
        self, data: bytes, aligned: bool, limit: int | None = None, max_faces: int | None = None
    ) -> list[Face]:
        """The `limit` largest faces of the photo (all by default), largest first, aligned.

        Raises NoFaceError when there is none and TooManyFacesError when more than `max_faces` are found.
        With `aligned`, the photo must itself be a 112x112 aligned crop: it is the one face, no detection.
        """
        image = self.decode(data)
        if aligned:
            height, width = image.shape[:2]
            if (height, width) != (FACE_SIZE, FACE_SIZE):
                raise InvalidRequestError(
                    f"aligned=true needs a {FACE_SIZE}x{FACE_SIZE} aligned face crop, got {width}x{height}; "
                    "send the photo with aligned=false to detect and align the face"
                )
            box = np.array([0, 0, FACE_SIZE, FACE_SIZE], dtype=np.float32)
            return [Face(box, None, ARCFACE_TEMPLATE_112.copy(), image)]
        detections = self.detector.detect(image)
        if not detections:
            raise NoFaceError("no face found in the image")
        if max_faces is not None and len(detections) > max_faces:
            raise TooManyFacesError(
                f"found {len(detections)} faces, the limit is {max_faces} per image; "
                "crop the photo or use /v1/verify (which uses the largest face)"
            )
        chosen = detections[:limit]
        return [Face(d.box_xyxy, d.score, d.landmarks, align_face(image, d.landmarks)) for d in chosen]

    def embed(self, faces: list[Face]) -> list[Face]:
        """The same faces with their embeddings, all computed in one network batch."""
        batch = faces_to_tensor([face.aligned for face in faces])
        embeddings = embed_faces(self.network, batch).numpy()
        return [Face(f.box_xyxy, f.score, f.landmarks, f.aligned, embeddings[i]) for i, f in enumerate(faces)]

    def layer_masks(self, face: Face) -> list[LayerMask]:
        """Guided mask of every DRConv layer for this face (empty for a network without DRConv)."""
        with torch.inference_mode():
            masks = self.mask_network.region_masks(faces_to_tensor([face.aligned]))
        return [LayerMask(m.name, int(m.regions), m.mask[0].numpy()) for m in masks]

    # -- what the endpoints run -----------------------------------------------------------------------
    def embed_photo(self, data: bytes, aligned: bool) -> list[Face]:
        """/v1/embed: every face with its embedding, largest first, at most `max_faces`."""
        return self.embed(self.find_faces(data, aligned, max_faces=self.settings.max_faces))

    def verify_photos(self, data1: bytes, data2: bytes, aligned: bool) -> tuple[Face, Face, float]:
        """/v1/verify: the largest face of each photo and their cosine similarity in [-1, 1]."""
        faces = [self._largest(data1, aligned, "image1"), self._largest(data2, aligned, "image2")]
        first, second = self.embed(faces)
        assert first.embedding is not None and second.embedding is not None
        similarity = float(np.dot(first.embedding, second.embedding))
        return first, second, similarity

    def region_map(self, data: bytes, aligned: bool, face_index: int) -> tuple[Face, list[LayerMask]]:
        """/v1/region-map: face number `face_index` (0 = largest) and its guided masks."""
        faces = self.find_faces(data, aligned, limit=face_index + 1)
        if face_index >= len(faces):
            raise InvalidRequestError(
                f"face_index {face_index} is out of range: the image has {len(faces)} face(s)"
            )
        face = faces[face_index]
        return face, self.layer_masks(face)

    def warm_up(self, runs: int) -> float:
        """Run detector, network (batch 1 and 2) and region masks `runs` times; returns the last run in ms."""
        image = np.full((250, 250, 3), 128, dtype=np.uint8)
        cv2.circle(image, (125, 125), 60, (90, 120, 170), -1)
        crop = np.ascontiguousarray(image[69:181, 69:181])
        elapsed_ms = 0.0
        for _ in range(runs):
            start = time.perf_counter()
            self.detector.detect(image)
            face = Face(np.zeros(4, np.float32), None, ARCFACE_TEMPLATE_112.copy(), crop)
            self.embed([face])
            self.embed([face, face])
            self.layer_masks(face)
            elapsed_ms = (time.perf_counter() - start) * 1000
        return elapsed_ms

    def _largest(self, data: bytes, aligned: bool, field: str) -> Face:
        try:
            return self.find_faces(data, aligned, limit=1)[0]
        except NoFaceError as exc:
            raise NoFaceError(f"no face found in {field}") from exc


class TracedNetwork(nn.Module):
    """A frozen TorchScript trace of the network (batch norm folded, oneDNN kernels): same embeddings, faster.

    Holds an empty parameter because `embed_faces` reads the device and dtype from the parameters, which
    freezing turns into constants.
    """

    def __init__(self, traced: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.traced = traced
        self.anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 112, 112) -> (B, D), like the traced network."""
        return self.traced(x)


def trace_for_inference(model: nn.Module, tolerance: float = 1e-4) -> nn.Module:
    """A traced copy of `model` if it gives the same normalised embeddings (batch 1 to 3), else `model`."""
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(2, 3, INPUT_SIZE, INPUT_SIZE, generator=generator) * 2 - 1
    try:
        # No warnings filter here: `catch_warnings` is process-wide and not thread-safe (this runs off the
        # event loop); the network's own input checks stay out of traces, so tracing warns about nothing.
        with torch.no_grad():
            traced = torch.jit.freeze(torch.jit.trace(model.eval(), example))
            traced = TracedNetwork(torch.jit.optimize_for_inference(traced))
        with torch.inference_mode():
            for batch in (1, 2, 3):
                x = torch.rand(batch, 3, INPUT_SIZE, INPUT_SIZE, generator=generator) * 2 - 1
                error = (F.normalize(traced(x), dim=1) - F.normalize(model(x), dim=1)).abs().max()
                if not error <= tolerance:
                    raise ValueError(f"traced network differs from eager by {float(error):.2e}")
    except Exception as exc:  # tracing is an optimisation: any failure falls back to the eager network
        logger.warning("network not traced, using eager PyTorch: %s", exc)
        return model
    return traced


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
