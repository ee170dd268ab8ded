"""Streaming batches: DataLoader workers decode and augment the very batches the in-memory path makes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from training.config import AugmentConfig, DataConfig
from training.data import BatchSource, decode_faces, use_streaming
from training.recordio import write_recordio
from training.streaming import StreamingBatches, StreamingBatchSource


@pytest.fixture(scope="module")
def face_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    files = []
    for k in range(24):
        path = folder / f"{k:02d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
        files.append(path)
    return files


def _sources(refs, labels, teacher, workers: int, rank: int = 0, world: int = 1):
    faces = decode_faces(refs)
    memory = BatchSource(faces, labels, 8, 5, AugmentConfig(), rank, world, teacher=teacher)
    stream = StreamingBatchSource(
        StreamingBatches(refs, labels, 8, 5, AugmentConfig(), rank, world, teacher=teacher), workers
    )
    return memory, stream


def _assert_same(a, b):
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert (a[2] is None and b[2] is None) or torch.equal(a[2], b[2])


def test_worker_batches_equal_in_memory_batches_from_any_position(face_files: list[Path]):
    labels = np.arange(24) % 5
    teacher = np.random.default_rng(1).standard_normal((24, 4)).astype(np.float32)
    torch.set_num_threads(1)  # workers run one thread; so must the comparison for bitwise equality
    memory, stream = _sources(face_files, labels, teacher, workers=2)
    for epoch, step in [(0, 0), (0, 1), (0, 2), (1, 0), (2, 1), (2, 2)]:  # includes jumps, as a resume does
        _assert_same(stream.batch(epoch, step), memory.batch(epoch, step))


def test_streaming_from_a_rec_and_rank_slices(face_files: list[Path], tmp_path: Path):
    from training.data import scan_identities

    write_recordio(tmp_path / "train.rec", [face_files[:12], face_files[12:]])
    refs = [ref for identity in scan_identities(tmp_path / "train.rec") for ref in identity.files]
    labels = np.repeat([0, 1], 12)
    memory, _ = _sources(face_files, labels, None, workers=0)
    parts = [_sources(refs, labels, None, workers=0, rank=r, world=2)[1].batch(1, 1) for r in range(2)]
    whole = memory.batch(1, 1)
    assert torch.equal(torch.cat([p[0] for p in parts]), whole[0])
    assert torch.equal(torch.cat([p[1] for p in parts]), whole[1]) and parts[0][2] is None


def test_auto_loader_streams_what_does_not_fit_the_memory_budget():
    config = DataConfig(roots=[Path("x")], memory_budget_gb=1.0)
    assert not use_streaming(config, 28_000)  # 28,000 x 37,632 bytes: just under 1 GiB
    assert use_streaming(config, 29_000)
    assert use_streaming(config.model_copy(update={"loader": "stream"}), 10)
    assert not use_streaming(config.model_copy(update={"loader": "memory"}), 10**9)


class _MeanColourTeacher:
    """Stands in for an ONNX teacher: a face's embedding is its normalised mean colour."""

    cache_id = "mean-colour"
    embedding_dim = 3

    def embed(self, faces_bgr: np.ndarray) -> np.ndarray:
        mean = faces_bgr.reshape(len(faces_bgr), -1, 3).mean(axis=1)
        return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)


def test_streamed_faces_get_the_teacher_embeddings_in_memory_faces_get(
    face_files: list[Path], tmp_path: Path, monkeypatch
):
    from training import train
    from training.config import load_config
    from training.data import FaceData

    monkeypatch.setattr(train, "TEACHER_CHUNK_FACES", 5)  # several chunks
    config = load_config(None, {"data.roots": ["x"], "data.cache_dir": str(tmp_path)})
    empty = np.empty((0, 112, 112, 3), np.uint8)
    labels = np.arange(20) % 4
    common = {"class_names": ["a"] * 4, "holdout_faces": empty, "holdout_pairs": np.empty((0, 2))}
    common["holdout_same"] = np.empty(0, bool)
    memory = FaceData(
        decode_faces(face_files[:20]), labels, unlabelled_faces=decode_faces(face_files[20:]), **common
    )
    streamed = FaceData(empty, labels, stream_refs=face_files, **common)
    teacher = _MeanColourTeacher()
    expected = train._all_teacher_embeddings(memory, teacher, config)
    assert expected.shape == (24, 3)
    np.testing.assert_array_equal(train._all_teacher_embeddings(streamed, teacher, config), expected)
    assert streamed.training_labels().tolist() == [*labels.tolist(), -1, -1, -1, -1]
