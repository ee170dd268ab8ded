"""Reading photos for evaluation: photo files -> aligned faces (the face pipeline) -> embeddings.

Per image, once: file bytes -> `model.pipeline.read_faces` with the largest face and the centre-crop
no-face policy (counted as `undetected`) -> `embed_faces` (flip-sum, L2-normalised). Used by `drface eval`,
training's CFP monitor (`training/validate.py`), `.bin` sets (`training/binsets.py`) and the scripts.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from model.decode import ImageError
from model.detect import FaceDetector
from model.embed import embed_faces
from model.pipeline import ImageLimits, faces_to_tensor, read_faces


class EvaluationError(Exception):
    """A user-caused evaluation failure: missing data, unreadable image, unusable protocol or weights."""


class EvalSettings(BaseModel):
    """How images are read and embedded during evaluation."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(
        16,
        ge=1,
        description="Faces per network call (each doubled by the flip). On CPU, bigger batches mostly add "
        "page-fault time (the activations are re-allocated per layer); raise it on a GPU.",
    )
    workers: int = Field(2, ge=1, description="Threads decoding / detecting / aligning images in parallel.")
    flip: bool = Field(True, description="Embedding = normalise(f(x) + f(flip(x))).")
    max_image_bytes: int = Field(50 * 2**20, ge=1, description="Larger image files are refused (bytes).")
    max_image_pixels: int = Field(60_000_000, ge=1, description="Larger images are refused (width x height).")
    progress: bool = Field(True, description="Show a tqdm progress bar on stderr.")


def load_face(path: Path, detector: FaceDetector, settings: EvalSettings) -> tuple[np.ndarray, bool]:
    """One photo -> ((112, 112, 3) uint8 BGR aligned largest face, detected); no face: centre crop, False."""
    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
    try:
        face = read_faces(Path(path).read_bytes(), detector, limits, limit=1, no_face="center_crop")[0]
    except (OSError, ImageError) as exc:
        raise EvaluationError(f"cannot read image {path}: {exc}") from exc
    return face.aligned, face.detected


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def embed_images(
    model: torch.nn.Module,
    paths: Sequence[Path],
    detector: FaceDetector | None = None,
    settings: EvalSettings | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed raw photos -> (embeddings (N, D) float32 unit-norm, undetected (N,) bool).

    Images are loaded by `settings.workers` threads (onnxruntime and OpenCV release the GIL) one batch ahead
    of the network, so detection of batch k+1 overlaps the embedding of batch k; memory stays O(batch).
    """
    settings = settings or EvalSettings()
    detector = detector or FaceDetector()
    paths = list(paths)
    if not paths:
        raise EvaluationError("no images to embed")
    undetected = np.zeros(len(paths), dtype=bool)
    embeddings: np.ndarray | None = None
    chunks = list(_chunks(paths, settings.batch_size))
    progress = tqdm(
        total=len(paths), unit="img", desc="embedding", disable=not settings.progress, file=sys.stderr
    )
    with (
        progress as bar,
        ThreadPoolExecutor(max_workers=settings.workers) as pool,
    ):

        def submit(chunk: Sequence[Path]) -> list[Future[tuple[np.ndarray, bool]]]:
            return [pool.submit(load_face, path, detector, settings) for path in chunk]

        pending = submit(chunks[0])
        start = 0
        try:
            for k in range(len(chunks)):
                loaded = [future.result() for future in pending]
                if k + 1 < len(chunks):
                    pending = submit(chunks[k + 1])
                faces = faces_to_tensor([face for face, _ in loaded])
                batch = embed_faces(model, faces, flip=settings.flip).cpu().numpy()
                if embeddings is None:
                    embeddings = np.empty((len(paths), batch.shape[1]), dtype=np.float32)
                embeddings[start : start + len(loaded)] = batch
                undetected[start : start + len(loaded)] = [not detected for _, detected in loaded]
                start += len(loaded)
                bar.update(len(loaded))
        except BaseException:
            for future in pending:  # do not load the rest of the batch after a failure or Ctrl-C
                future.cancel()
            raise
    assert embeddings is not None
    return embeddings, undetected


def embed_aligned_faces(
    model: torch.nn.Module, faces: np.ndarray | Sequence[np.ndarray], batch_size: int = 64, flip: bool = True
) -> np.ndarray:
    """Embed already aligned crops: (N, 112, 112, 3) uint8 BGR -> (N, D) float32 unit-norm. No detection."""
    if len(faces) == 0:
        raise EvaluationError("no faces to embed")
    parts = [
        embed_faces(model, faces_to_tensor(list(chunk)), flip=flip).cpu().numpy()
        for chunk in _chunks(faces, batch_size)
    ]
    return np.concatenate(parts).astype(np.float32, copy=False)
