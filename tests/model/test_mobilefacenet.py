"""MobileFaceNet backbone: shapes, DRConv placement, plain ablation, region masks."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from model import BackboneConfig, MobileFaceNet, build_backbone
from model.drconv import DRConv2d
from model.mobilefacenet import Pointwise

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    return torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _structure(model: nn.Module) -> list[tuple[str, str]]:
    """(name, type) of every module, with the insides of each Pointwise conv left out."""
    pointwise_convs = {f"{name}.conv" for name, m in model.named_modules() if isinstance(m, Pointwise)}
    return [
        (name, "pointwise-conv" if name in pointwise_convs else type(m).__name__)
        for name, m in model.named_modules()
        if not any(name.startswith(conv + ".") for conv in pointwise_convs)
    ]


def test_default_backbone_maps_faces_to_512d_embeddings(faces):
    model = build_backbone().eval()
    with torch.no_grad():
        out = model(faces)
    assert out.shape == (2, 512)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_plain_backbone_has_no_drconv_and_the_same_structure(faces):
    dynamic, plain = build_backbone(drconv=True), build_backbone(drconv=False)
    assert not any(isinstance(m, DRConv2d) for m in plain.modules())
    assert plain.drconv_layers() == []
    assert _structure(dynamic) == _structure(plain)
    with torch.no_grad():
        assert plain.eval()(faces).shape == (2, 512)


def test_default_placement_is_the_projection_of_every_stage1_block():
    model = build_backbone()
    names = [name for name, _ in model.drconv_layers()]
    assert names == [f"stage1.{i}.project" for i in range(5)]
    assert all(layer.region_num == 8 for _, layer in model.drconv_layers())


def test_placement_and_region_num_follow_the_config():
    model = build_backbone(region_num=4, drconv_stages=("stage3",), drconv_convs=("project",))
    layers = model.drconv_layers()
    assert [name for name, _ in layers] == [f"stage3.{i}.project" for i in range(6)]
    assert all(layer.region_num == 4 and layer.in_channels == 256 for _, layer in layers)


def test_drconv_options_reach_the_layers():
    model = build_backbone(drconv_rank=4, drconv_generator_channels=12)
    assert all(layer.rank == 4 and layer.generator_channels == 12 for _, layer in model.drconv_layers())


def test_region_masks_cover_every_drconv_layer_at_its_resolution(faces):
    model = build_backbone(region_num=4, drconv_convs=("expand", "project")).eval()
    with torch.no_grad():
        masks = model.region_masks(faces)
    assert [m.name for m in masks] == [name for name, _ in model.drconv_layers()]
    assert masks[0].mask.shape == (2, 56, 56)  # stage1.0.expand runs before the stride-2 depthwise
    assert all(m.mask.shape == (2, 28, 28) for m in masks[1:])
    for region_mask in masks:
        assert region_mask.regions == 4
        assert region_mask.mask.dtype == torch.int64
        assert int(region_mask.mask.min()) >= 0 and int(region_mask.mask.max()) < 4


def test_forward_with_masks_returns_the_same_embedding_as_forward(faces):
    model = build_backbone().eval()
    with torch.no_grad():
        embeddings, masks = model.forward_with_masks(faces)
        assert torch.equal(embeddings, model(faces))
    assert [m.name for m in masks] == [f"stage1.{i}.project" for i in range(5)]


def test_drconv_input_shapes_follow_the_paper_table():
    shapes = build_backbone(
        drconv_stages=("stage1", "stage4"), drconv_convs=("expand", "project")
    ).drconv_input_shapes(batch=2)
    assert shapes["stage1.0.expand"] == (2, 64, 56, 56)
    assert shapes["stage1.0.project"] == (2, 128, 28, 28)
    assert shapes["stage1.4.expand"] == (2, 64, 28, 28)
    assert shapes["stage4.0.expand"] == (2, 128, 14, 14)
    assert shapes["stage4.0.project"] == (2, 512, 7, 7)


def test_plain_backbone_has_no_region_masks(faces):
    with torch.no_grad():
        assert build_backbone(drconv=False).eval().region_masks(faces) == []


def test_training_step_reaches_every_drconv_parameter(faces):
    model = build_backbone(region_num=4, drconv_convs=("expand", "project")).train()
    model(faces).square().mean().backward()
    for name, layer in model.drconv_layers():
        for param_name, param in layer.named_parameters():
            assert param.grad is not None, f"{name}.{param_name}"
            assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, f"{name}.{param_name}"


def test_width_multiplier_scales_channels_but_not_the_embedding(faces):
    model = build_backbone(width_multiplier=0.5, embedding_dim=128).eval()
    assert model.stem[0].out_channels == 32
    with torch.no_grad():
        assert model(faces).shape == (2, 128)


def test_same_seed_builds_the_same_network():
    torch.manual_seed(3)
    first = build_backbone().state_dict()
    torch.manual_seed(3)
    second = build_backbone().state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_config_rejects_unknown_options_and_stages():
    with pytest.raises(ValidationError):
        build_backbone(depth=3)
    with pytest.raises(ValidationError):
        BackboneConfig(drconv_stages=("stage9",))
    with pytest.raises(ValidationError):
        BackboneConfig(region_num=1)


def test_config_round_trips_through_json():
    config = BackboneConfig(region_num=4, drconv_stages=("stage1", "stage3"), drconv_convs=("project",))
    assert BackboneConfig.model_validate_json(config.model_dump_json()) == config
    assert MobileFaceNet(config).config == config


def test_wrong_input_size_is_a_clear_error():
    with pytest.raises(ValueError, match="112"):
        build_backbone(drconv=False)(torch.zeros(1, 3, 96, 96))


def test_tracing_the_network_warns_about_nothing(faces):
    # The service traces the network at start-up; its input checks must stay out of the trace.
    model = build_backbone().eval()
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        traced = torch.jit.trace(model, faces)
    assert [str(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning)] == []
    with torch.no_grad():
        assert torch.allclose(traced(faces), model(faces), atol=1e-5)


def test_training_and_inference_paths_give_the_same_embeddings(faces):
    model = build_backbone(region_num=4, drconv_convs=("expand", "project")).eval()
    with torch.no_grad():
        inference = model(faces)  # no autograd: DRConv's inference path (chosen filter only)
    training = model(faces)  # autograd recording: DRConv's training path (softmax-gradient one-hot)
    assert training.requires_grad
    torch.testing.assert_close(training.detach(), inference, rtol=1e-4, atol=1e-4)


def test_plain_network_matches_the_papers_size_and_madds():
    # Chen et al. 2018, MobileFaceNet with a 128-d embedding: 0.99M parameters, 221M MAdds at 112x112.
    spec = importlib.util.spec_from_file_location("model_stats", REPO_ROOT / "scripts" / "model_stats.py")
    stats = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stats)
    counted = stats.count(build_backbone(drconv=False, embedding_dim=128))
    assert counted["params"] == pytest.approx(0.99e6, rel=0.02)
    assert counted["madds"] == pytest.approx(221e6, rel=0.01)
