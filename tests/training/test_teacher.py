"""The distillation teacher: ONNX repairs, declared input, batch-1 graphs, the content-keyed cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from training.config import DistillInputConfig
from training.teacher import OnnxTeacher, TeacherError, teacher_embeddings

WEIGHT = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)


def _tiny_teacher(path: Path, fixed_batch_reshape: bool) -> Path:
    """A 'face model' with SFace's quirks: batch fixed at 1, an unused input and a weight listed as input.

    embedding = mean over pixels of each channel (1, 3) @ WEIGHT (3, 8). With `fixed_batch_reshape` the
    (1, 3, 1, 1) -> (1, 3) step is a Reshape to the constant shape [1, 3], so no batch > 1 can run.
    """
    nodes = [helper.make_node("ReduceMean", ["data", "axes"], ["pooled"], keepdims=1)]
    if fixed_batch_reshape:
        nodes.append(helper.make_node("Reshape", ["pooled", "shape"], ["flat"]))
    else:
        nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], axis=1))
    nodes.append(helper.make_node("MatMul", ["flat", "weight"], ["embedding"]))
    initializers = [
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
        numpy_helper.from_array(np.array([1, 3], np.int64), "shape"),
        numpy_helper.from_array(WEIGHT, "weight"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [
            helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 112, 112]),
            helper.make_tensor_value_info("unused", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("weight", TensorProto.FLOAT, [3, 8]),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 8])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _expected(faces_bgr: np.ndarray, config: DistillInputConfig) -> np.ndarray:
    x = faces_bgr[..., ::-1] if config.channel_order == "rgb" else faces_bgr
    x = (x.astype(np.float32) - np.array(config.mean, np.float32)) / np.array(config.std, np.float32)
    out = x.mean(axis=(1, 2)) @ WEIGHT
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def faces() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)


@pytest.mark.parametrize("fixed_batch", [False, True])
def test_teacher_follows_the_declared_input_and_normalises(tmp_path, faces, fixed_batch):
    config = DistillInputConfig(channel_order="rgb", mean=[10.0, 20.0, 30.0], std=[2.0, 4.0, 8.0])
    teacher = OnnxTeacher(_tiny_teacher(tmp_path / "t.onnx", fixed_batch), config)
    assert teacher.embedding_dim == 8
    assert teacher.batched is not fixed_batch
    np.testing.assert_allclose(teacher.embed(faces), _expected(faces, config), rtol=1e-4, atol=1e-5)


def test_bgr_declaration_feeds_bgr(tmp_path, faces):
    config = DistillInputConfig(channel_order="bgr")
    teacher = OnnxTeacher(_tiny_teacher(tmp_path / "t.onnx", False), config)
    np.testing.assert_allclose(teacher.embed(faces), _expected(faces, config), rtol=1e-4, atol=1e-5)


def test_cache_computes_each_face_once_across_runs(tmp_path, faces, monkeypatch):
    teacher = OnnxTeacher(_tiny_teacher(tmp_path / "t.onnx", False), DistillInputConfig())
    calls: list[int] = []
    real_embed = teacher.embed
    monkeypatch.setattr(teacher, "embed", lambda batch: calls.append(len(batch)) or real_embed(batch))
    first = teacher_embeddings(faces[:3], teacher, tmp_path / "cache", batch_size=2, progress=False)
    assert sum(calls) == 3
    # a second run on more faces, with a repeated one, runs only the 2 new faces
    more = np.concatenate([faces, faces[:1]])
    second = teacher_embeddings(more, teacher, tmp_path / "cache", batch_size=2, progress=False)
    assert sum(calls) == 5
    np.testing.assert_array_equal(second[:3], first)
    np.testing.assert_array_equal(second[5], second[0])
    np.testing.assert_allclose(second, _expected(more, DistillInputConfig()), rtol=1e-4, atol=1e-5)


def test_another_teacher_file_or_input_gets_its_own_cache(tmp_path):
    a = OnnxTeacher(_tiny_teacher(tmp_path / "a.onnx", False), DistillInputConfig())
    b = OnnxTeacher(_tiny_teacher(tmp_path / "b.onnx", True), DistillInputConfig())
    c = OnnxTeacher(tmp_path / "a.onnx", DistillInputConfig(channel_order="bgr"))
    assert len({a.cache_id, b.cache_id, c.cache_id}) == 3


def test_a_corrupt_cache_shard_is_recomputed_not_trusted(tmp_path, faces):
    teacher = OnnxTeacher(_tiny_teacher(tmp_path / "t.onnx", False), DistillInputConfig())
    expected = teacher_embeddings(faces, teacher, tmp_path / "cache", progress=False)
    for shard in (tmp_path / "cache").rglob("part-*.npz"):
        shard.write_bytes(b"not a zip file")
    again = teacher_embeddings(faces, teacher, tmp_path / "cache", progress=False)
    np.testing.assert_allclose(again, expected)


def test_unusable_teacher_files_are_clear_errors(tmp_path):
    with pytest.raises(TeacherError, match="not found"):
        OnnxTeacher(tmp_path / "missing.onnx", DistillInputConfig())
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(TeacherError):
        OnnxTeacher(garbage, DistillInputConfig())


@pytest.mark.data
def test_sface_teacher_loads_batched_and_agrees_with_batch_one(tmp_path):
    """The shipped teacher: declared inputs repaired, batch made symbolic, same output as one at a time."""
    path = Path(__file__).resolve().parents[3] / "shared" / "teachers" / "sface"
    files = sorted(path.glob("*.onnx"))
    if not files:
        pytest.skip(f"no teacher at {path}")
    teacher = OnnxTeacher(files[0], DistillInputConfig())
    faces = np.random.default_rng(2).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    batched = teacher.embed(faces)
    single = np.concatenate([teacher.embed(faces[i : i + 1]) for i in range(3)])
    assert batched.shape == (3, 128)
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-4)
