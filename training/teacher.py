"""Distillation teacher: any ONNX face-embedding network, run once per aligned face and cached on disk.

`OnnxTeacher` loads a user's ONNX file with onnxruntime after two repairs that real exported face models need:
graph inputs that no node reads (or that are really weights) are dropped, and a batch dimension fixed at 1 is
made symbolic. If the graph still refuses a batch (a Reshape that hard-codes 1, say), faces run one at a time.
Its input is declared in the config (`DistillInputConfig`): size, channel order, layout, mean and std.

`teacher_embeddings` maps aligned faces (N, 112, 112, 3) uint8 BGR to the teacher's L2-normalised embeddings
(N, D) float32. Results are cached in shards under `<cache>/teacher/<teacher sha256>-<input hash>/`, keyed by
a hash of each face's pixels: a resumed run, a second run or a run on more data computes only new faces, and
an interrupted computation keeps every finished shard.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from model.align import FACE_SIZE
from model.artifact import file_sha256, write_atomic
from training.config import DistillInputConfig

log = logging.getLogger(__name__)

SHARD_FACES = 1024  # faces per cache shard: a lost shard costs ~20 s of teacher time on 2 cores
KEY_BYTES = 16  # blake2b digest of a face's pixels


class TeacherError(ValueError):
    """A teacher file that cannot be used (missing, not ONNX, wrong input or output shape)."""


def _repaired_graph(path: Path, symbolic_batch: bool) -> bytes:
    """The ONNX model with only real inputs left, and (optionally) a symbolic batch dimension."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ... for a bad file
        raise TeacherError(f"cannot read teacher {path} as ONNX: {exc}") from None
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    consumed = {name for node in graph.node for name in node.input}
    inputs = [i for i in graph.input if i.name in consumed and i.name not in weights]
    if len(inputs) != 1:
        raise TeacherError(
            f"teacher {path} must have exactly one image input, found {[i.name for i in inputs]}"
        )
    del graph.input[:]
    graph.input.extend(inputs)
    if symbolic_batch:
        for value in [*graph.input, *graph.output]:
            dims = value.type.tensor_type.shape.dim
            if dims:
                dims[0].dim_param = "batch"
        del graph.value_info[:]  # stale shapes that still say batch 1; onnxruntime re-infers them
    return model.SerializeToString()


class OnnxTeacher:
    """An ONNX face-embedding model as a teacher: `embed(faces (N, 112, 112, 3) uint8 BGR) -> (N, D)`."""

    def __init__(self, path: Path, input_config: DistillInputConfig, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise TeacherError(f"teacher file not found: {self.path}")
        self.input_config = input_config
        self.sha256 = file_sha256(self.path)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # the repaired graphs trigger harmless warnings
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
        graph = _repaired_graph(self.path, symbolic_batch=True)
        try:
            self._session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
            self.batched = True
            self.embedding_dim = self.run_raw(self._probe(2)).shape[1]
        except Exception as exc:  # the graph hard-codes batch 1 somewhere inside: run faces one by one
            log.info("teacher does not take batches (%s); running one face at a time", exc)
            try:
                graph = _repaired_graph(self.path, symbolic_batch=False)
                self._session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
                self.batched = False
                self.embedding_dim = self.run_raw(self._probe(1)).shape[1]
            except Exception as inner:
                raise TeacherError(
                    f"teacher {self.path} does not run on the declared input: {inner}"
                ) from None

    def _probe(self, n: int) -> np.ndarray:
        return np.full((n, FACE_SIZE, FACE_SIZE, 3), 128, np.uint8)

    def preprocess(self, faces_bgr: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) uint8 BGR -> the teacher's input (N, 3, S, S) or (N, S, S, 3) float32."""
        cfg = self.input_config
        faces = faces_bgr
        if cfg.size != faces.shape[1]:
            faces = np.stack(
                [cv2.resize(f, (cfg.size, cfg.size), interpolation=cv2.INTER_LINEAR) for f in faces]
            )
        if cfg.channel_order == "rgb":
            faces = faces[..., ::-1]
        x = (faces.astype(np.float32) - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
        if cfg.layout == "nchw":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)

    def run_raw(self, faces_bgr: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) uint8 BGR -> the teacher's (N, D) float32 output, not normalised."""
        x = self.preprocess(faces_bgr)
        name = self._session.get_inputs()[0].name
        if self.batched:
            out = self._session.run(None, {name: x})[0]
        else:
            out = np.concatenate([self._session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])
        out = np.asarray(out, np.float32).reshape(len(x), -1)
        if not np.all(np.isfinite(out)):
            raise TeacherError(f"teacher {self.path} produced non-finite embeddings")
        return out

    def embed(self, faces_bgr: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) uint8 BGR aligned faces -> (N, D) float32 L2-normalised embeddings."""
        out = self.run_raw(faces_bgr)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    @property
    def cache_id(self) -> str:
        """Names this teacher + input declaration: embeddings change when either does."""
        declared = json.dumps(self.input_config.model_dump(mode="json"), sort_keys=True)
        return f"{self.sha256[:16]}-{hashlib.sha256(declared.encode()).hexdigest()[:8]}"


class TeacherModule(nn.Module):
    """An `OnnxTeacher` behind the student's interface, (B, 3, 112, 112) float RGB in [-1, 1] -> (B, D)
    unnormalised, so `drface eval` measures it with the same pipeline, flip and protocol. CPU only."""

    def __init__(self, teacher: OnnxTeacher) -> None:
        super().__init__()
        self.teacher = teacher
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)  # tells callers the device and dtype

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        # [-1, 1] RGB came from uint8 as u / 127.5 - 1, so this recovers the exact pixels
        pixels = ((faces.detach().cpu().flip(1) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return torch.from_numpy(self.teacher.run_raw(pixels.permute(0, 2, 3, 1).numpy()))


def face_keys(faces_bgr: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, KEY_BYTES) uint8: a content hash per face."""
    keys = np.empty((len(faces_bgr), KEY_BYTES), np.uint8)
    for i, face in enumerate(faces_bgr):
        keys[i] = np.frombuffer(hashlib.blake2b(face.tobytes(), digest_size=KEY_BYTES).digest(), np.uint8)
    return keys


def _read_shards(folder: Path, dim: int) -> dict[bytes, np.ndarray]:
    known: dict[bytes, np.ndarray] = {}
    for shard in sorted(folder.glob("part-*.npz")):
        try:
            with np.load(shard, allow_pickle=False) as data:
                keys, embeddings = data["keys"], data["embeddings"]
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable teacher cache shard %s: %s", shard, exc)
            continue
        if embeddings.ndim != 2 or embeddings.shape[1] != dim or len(keys) != len(embeddings):
            log.warning("ignoring teacher cache shard %s of another shape", shard)
            continue
        known.update(zip((k.tobytes() for k in keys), embeddings, strict=True))
    return known


def teacher_embeddings(
    faces_bgr: np.ndarray,
    teacher: OnnxTeacher,
    cache_dir: Path,
    batch_size: int = 32,
    progress: bool = True,
) -> np.ndarray:
    """The teacher's (N, D) float32 L2-normalised embeddings of aligned faces (N, 112, 112, 3) uint8 BGR.

    Only faces whose content is not yet in the cache are run; new results are appended as shards of
    SHARD_FACES faces, each written atomically as soon as it is complete.
    """
    from tqdm import tqdm

    folder = Path(cache_dir) / "teacher" / teacher.cache_id
    folder.mkdir(parents=True, exist_ok=True)
    keys = face_keys(faces_bgr)
    known = _read_shards(folder, teacher.embedding_dim)
    missing = [i for i, key in enumerate(keys) if key.tobytes() not in known]
    missing = list({keys[i].tobytes(): i for i in missing}.values())  # identical faces run once
    bar = tqdm(
        total=len(missing),
        desc="teacher",
        unit="face",
        disable=not progress or not missing,
        dynamic_ncols=True,
    )
    next_shard = len(list(folder.glob("part-*.npz")))
    for start in range(0, len(missing), SHARD_FACES):
        rows = np.array(missing[start : start + SHARD_FACES])
        parts = []
        for b in range(0, len(rows), batch_size):
            parts.append(teacher.embed(faces_bgr[rows[b : b + batch_size]]))
            bar.update(len(rows[b : b + batch_size]))
        embeddings = np.concatenate(parts)
        shard = folder / f"part-{next_shard:05d}-{os.getpid()}.npz"
        write_atomic(shard, lambda tmp, k=keys[rows], e=embeddings: _save_npz(tmp, k, e))
        next_shard += 1
        known.update(zip((k.tobytes() for k in keys[rows]), embeddings, strict=True))
    bar.close()
    return np.stack([known[key.tobytes()] for key in keys]).astype(np.float32, copy=False)


def _save_npz(path: Path, keys: np.ndarray, embeddings: np.ndarray) -> None:
    with path.open("wb") as f:
        np.savez(f, keys=keys, embeddings=embeddings)
