"""Fixtures shared by the model tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Model tests use tiny tensors: one thread is cheaper on a shared 2-core machine. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shipped_onnx(tmp_path_factory) -> Path:
    """The shipped model exported with a dynamic batch and region maps (synthetic check inputs)."""
    from model.artifact import load_artifact
    from model.export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "shipped.onnx"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        export_onnx(load_artifact(), path, region_maps=True)
    finally:
        torch.set_num_threads(threads)
    return path


@pytest.fixture
def tiny_loaded():
    """A small random DRConv network (DRConv in stage1 and stage3: 28x28 and 14x14 maps), eval mode."""
    from model.artifact import LoadedModel, ModelCard
    from model.mobilefacenet import build_backbone

    torch.manual_seed(0)
    network = build_backbone(
        region_num=4, width_multiplier=0.25, embedding_dim=32, drconv_stages=("stage1", "stage3")
    ).eval()
    card = ModelCard.for_backbone(network.config, name="tiny", version="0", trained=False)
    return LoadedModel(model=network, card=card)
