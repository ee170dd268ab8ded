"""ONNX export: standard ops, outputs, metadata; onnxruntime against PyTorch on faces and synthetic inputs."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
import torch.nn.functional as F

import model.drconv
import model.export
from model.artifact import load_artifact
from model.export import (
    MIN_COSINE,
    MIN_MASK_AGREEMENT,
    ExportCheckError,
    ExportError,
    ExportGraph,
    check_export,
    export_onnx,
    load_aligned_faces,
    synthetic_inputs,
)
from model.onnx_backend import OnnxNetwork


def _agreement(network, exported: OnnxNetwork, faces: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        expected, expected_masks = network.forward_with_masks(faces)
    embedding, masks = exported.forward_with_masks(faces)
    cosine = float(F.cosine_similarity(embedding, expected, dim=1).min())
    equal = sum(int((m.mask == e.mask).sum()) for m, e in zip(masks, expected_masks, strict=True))
    return cosine, equal / sum(m.mask.numel() for m in masks)


def test_drconv_maps_to_argmax_gather_elements_and_matmul_in_the_standard_domain(shipped_onnx: Path):
    graph = onnx.load(str(shipped_onnx)).graph
    ops = {node.op_type for node in graph.node}
    assert {"ArgMax", "GatherElements", "MatMul"} <= ops
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}


def test_onnx_checker_passes(shipped_onnx: Path):
    onnx.checker.check_model(str(shipped_onnx), full_check=True)


def test_outputs_are_the_embedding_and_one_int64_map_per_drconv_layer(shipped_onnx: Path):
    graph = onnx.load(str(shipped_onnx)).graph
    layers = [name for name, _ in load_artifact().model.drconv_layers()]

    def shape(value) -> tuple:
        return tuple(d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim)

    assert [(i.name, shape(i)) for i in graph.input] == [("face", ("batch", 3, 112, 112))]
    outputs = {o.name: (o.type.tensor_type.elem_type, shape(o)) for o in graph.output}
    expected = {"embedding": (onnx.TensorProto.FLOAT, ("batch", 512))}
    expected.update({f"region_map.{name}": (onnx.TensorProto.INT64, ("batch", 28, 28)) for name in layers})
    assert outputs == expected


def test_metadata_carries_the_model_card(shipped_onnx: Path):
    card = load_artifact().card
    props = {p.key: p.value for p in onnx.load(str(shipped_onnx)).metadata_props}
    assert json.loads(props["drface.card"]) == json.loads(card.model_dump_json())
    assert props["name"] == card.name and props["version"] == card.version
    assert props["embedding_dim"] == "512" and props["region_num"] == "8"
    assert json.loads(props["thresholds"]) == card.thresholds
    assert json.loads(props["operating_points"]) == card.operating_points
    assert "(B, 3, 112, 112) float32, RGB" in props["input_format"]
    assert json.loads(props["export_check"])["min_cosine"] >= MIN_COSINE


@pytest.mark.parametrize("batch", [1, 5])
def test_onnxruntime_matches_pytorch_on_synthetic_inputs(shipped_onnx: Path, batch: int):
    exported = OnnxNetwork(shipped_onnx, threads=1)
    cosine, agreement = _agreement(load_artifact().model, exported, synthetic_inputs(batch, seed=batch))
    assert cosine >= MIN_COSINE and agreement >= MIN_MASK_AGREEMENT


@pytest.mark.data
def test_onnxruntime_matches_pytorch_on_real_aligned_faces(shipped_onnx: Path, utkface_root: Path):
    faces = load_aligned_faces(utkface_root, limit=12)
    cosine, agreement = _agreement(load_artifact().model, OnnxNetwork(shipped_onnx, threads=1), faces)
    assert cosine >= MIN_COSINE and agreement >= MIN_MASK_AGREEMENT


def test_export_check_reports_the_comparison(shipped_onnx: Path):
    check = check_export(shipped_onnx, load_artifact().model)
    assert check.passed and check.aligned_faces == 0 and check.synthetic_inputs == 8
    assert check.mask_agreement is not None and check.mask_agreement >= MIN_MASK_AGREEMENT


def test_fixed_batch_export_has_a_fixed_batch_and_still_matches(tiny_loaded, tmp_path: Path):
    path = tmp_path / "tiny.onnx"
    check = export_onnx(tiny_loaded, path, opset=13, batch=2, region_maps=True)
    assert check.passed
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    exported = OnnxNetwork(path, threads=1)
    assert exported.batch == 2 and len(exported.region_layers) == 11  # 5 in stage1, 6 in stage3
    cosine, agreement = _agreement(tiny_loaded.model, exported, synthetic_inputs(3, seed=7))  # padded chunk
    assert cosine >= MIN_COSINE and agreement >= MIN_MASK_AGREEMENT


def test_without_region_maps_the_only_output_is_the_embedding(tiny_loaded, tmp_path: Path):
    path = tmp_path / "tiny.onnx"
    check = export_onnx(tiny_loaded, path)
    assert check.mask_agreement is None
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["embedding"]


def test_export_never_runs_the_fused_operator(tiny_loaded, tmp_path: Path, monkeypatch):
    def refuse(*_args):
        raise AssertionError("the fused operator path was taken during export")

    path = tmp_path / "tiny.onnx"
    monkeypatch.setattr(model.drconv, "_fused_applies", refuse)
    model.export._trace(ExportGraph(tiny_loaded.model, True).eval(), path, 17, None, ["embedding"])
    assert path.is_file()


def test_export_leaves_the_network_in_eval_mode(tiny_loaded, tmp_path: Path):
    export_onnx(tiny_loaded, tmp_path / "tiny.onnx", region_maps=True)
    assert not tiny_loaded.model.training


def test_a_failed_check_writes_nothing_and_keeps_the_previous_file(tiny_loaded, tmp_path: Path, monkeypatch):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(b"previous")
    monkeypatch.setattr(model.export, "MIN_COSINE", 1.5)
    with pytest.raises(ExportCheckError, match="check failed"):
        export_onnx(tiny_loaded, path)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.onnx"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"opset": 9}, "opset must be between"),
        ({"batch": 0}, "batch must be"),
        ({"out": "dir"}, "is a folder"),
    ],
)
def test_bad_options_raise_export_error(tiny_loaded, tmp_path: Path, options: dict, message: str):
    out = tmp_path / "model.onnx"
    if options.pop("out", None):
        out.mkdir()
    with pytest.raises(ExportError, match=message):
        export_onnx(tiny_loaded, out, **options)


def test_aligned_faces_are_read_from_a_folder_of_112_crops(tmp_path: Path):
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "a.png"), np.full((112, 112, 3), 200, np.uint8))
    cv2.imwrite(str(tmp_path / "big.png"), np.zeros((300, 300, 3), np.uint8))  # not a crop: skipped
    faces = load_aligned_faces(tmp_path)
    assert faces.shape == (1, 3, 112, 112) and torch.allclose(faces, torch.full_like(faces, 72.5 / 127.5))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="no 112x112"):
        load_aligned_faces(tmp_path / "empty")
    with pytest.raises(ExportError, match="not found"):
        load_aligned_faces(tmp_path / "missing")
