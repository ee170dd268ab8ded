"""OnnxNetwork: an exported file behind the torch network's interface, same embeddings and region maps."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
import torch.nn.functional as F

from model.artifact import load_artifact
from model.embed import embed_faces
from model.export import MIN_COSINE, export_onnx, onnx_network_for, synthetic_inputs
from model.onnx_backend import OnnxModelError, OnnxNetwork


@pytest.fixture(scope="module")
def shipped():
    return load_artifact()


def test_it_reads_the_card_and_the_exported_layers(shipped_onnx: Path, shipped):
    network = OnnxNetwork(shipped_onnx, threads=1)
    assert network.card == shipped.card
    assert network.region_layers == [name for name, _ in shipped.model.drconv_layers()]
    assert network.batch is None


def test_forward_with_masks_gives_the_torch_networks_outputs(shipped_onnx: Path, shipped):
    faces = synthetic_inputs(3, seed=11)
    embedding, masks = OnnxNetwork(shipped_onnx, threads=1).forward_with_masks(faces)
    with torch.no_grad():
        expected, expected_masks = shipped.model.forward_with_masks(faces)
    assert embedding.shape == (3, 512) and embedding.dtype == torch.float32
    assert F.cosine_similarity(embedding, expected).min() >= MIN_COSINE
    assert [(m.name, m.regions, m.mask.dtype) for m in masks] == [
        (m.name, m.regions, torch.int64) for m in expected_masks
    ]
    for mask, expected_mask in zip(masks, expected_masks, strict=True):
        assert (mask.mask == expected_mask.mask).float().mean() >= 0.999


def test_embed_faces_runs_it_like_the_torch_network(shipped_onnx: Path, shipped):
    faces = synthetic_inputs(2, seed=5)
    onnx_embeddings = embed_faces(OnnxNetwork(shipped_onnx, threads=1), faces)
    torch_embeddings = embed_faces(shipped.model, faces)
    assert torch.allclose(onnx_embeddings.norm(dim=1), torch.ones(2), atol=1e-5)
    assert (onnx_embeddings * torch_embeddings).sum(dim=1).min() >= MIN_COSINE


def test_region_masks_are_empty_for_a_file_exported_without_them(tiny_loaded, tmp_path: Path):
    path = tmp_path / "tiny.onnx"
    export_onnx(tiny_loaded, path)
    network = OnnxNetwork(path, threads=1)
    assert network.region_masks(synthetic_inputs(1)) == []
    assert network(synthetic_inputs(2)).shape == (2, 32)


def test_a_missing_file_or_a_foreign_onnx_file_is_refused(tmp_path: Path):
    with pytest.raises(OnnxModelError, match="not found"):
        OnnxNetwork(tmp_path / "missing.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"not onnx")
    with pytest.raises(OnnxModelError, match="cannot load"):
        OnnxNetwork(tmp_path / "garbage.onnx")
    value = onnx.helper.make_tensor_value_info("face", onnx.TensorProto.FLOAT, [1, 3])
    output = onnx.helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, [1, 3])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["face"], ["embedding"])], "g", [value], [output]
    )
    onnx.save(onnx.helper.make_model(graph), str(tmp_path / "foreign.onnx"))
    with pytest.raises(OnnxModelError, match="not exported by drface export"):
        OnnxNetwork(tmp_path / "foreign.onnx")


def test_onnx_network_for_refuses_a_file_of_other_weights_or_without_maps(
    tiny_loaded, shipped_onnx, tmp_path
):
    with pytest.raises(OnnxModelError, match="not the served weights"):
        onnx_network_for(tiny_loaded, shipped_onnx)
    path = tmp_path / "tiny.onnx"
    export_onnx(tiny_loaded, path)
    with pytest.raises(OnnxModelError, match="no region maps"):
        onnx_network_for(tiny_loaded, path)


def test_onnx_network_for_exports_when_given_no_file(tiny_loaded):
    network = onnx_network_for(tiny_loaded, threads=1)
    assert len(network.region_masks(synthetic_inputs(1))) == 11
