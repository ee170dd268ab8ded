"""The fused C++ operator for 1x1 DRConv inference (model/fused.py) vs the reference and the PyTorch path."""

from __future__ import annotations

import copy

import pytest
import torch

from model import drconv, fused
from model.drconv import DRConv2d
from tests.reference_drconv import reference_drconv

pytestmark = pytest.mark.skipif(
    not fused.available(), reason="fused operator not built (`python -m model.fused`, done by `make install`)"
)

# (C, O, size, batch, bias, region_num): the default backbone's shapes at batch 1 and 3, odd ones, and maps
# the operator splits into pixel chunks (33 x 33: two uneven chunks; 56 x 56: four)
SHAPES = [
    (64, 128, 14, 1, False, 8),
    (128, 64, 7, 3, False, 8),
    (6, 5, 9, 2, True, 4),
    (16, 24, 5, 1, False, 1),
    (16, 24, 33, 2, False, 8),
    (64, 128, 56, 1, False, 8),
]


def _case(shape: tuple) -> tuple[DRConv2d, torch.Tensor]:
    c, o, size, batch, bias, regions = shape
    torch.manual_seed(0)
    layer = DRConv2d(c, o, 1, region_num=regions, bias=bias).eval()
    with torch.no_grad():  # spread the guide so several regions win
        layer.region_weight[layer.rank :].mul_(4.0)
    return layer, torch.randn(batch, c, size, size)


@pytest.mark.parametrize("shape", SHAPES)
def test_fused_inference_matches_reference(shape):
    layer, x = _case(shape)
    with torch.inference_mode():
        y, mask = layer(x, return_mask=True)
    y_ref, mask_ref = reference_drconv(copy.deepcopy(layer).double(), x.double())
    assert torch.equal(mask, mask_ref)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4)
    assert shape[-1] == 1 or len(mask.unique()) > 1


@pytest.mark.parametrize("shape", SHAPES)
def test_fused_and_pytorch_paths_agree_in_float32(shape, monkeypatch):
    layer, x = _case(shape)
    x = x.contiguous(memory_format=torch.channels_last)  # the backbone's training layout
    with torch.inference_mode():
        y_fused, mask_fused = layer(x, return_mask=True)
        monkeypatch.setattr(drconv, "_fused_applies", lambda *_: False)
        y_torch, mask_torch = layer(x, return_mask=True)
    assert torch.equal(mask_fused, mask_torch)
    torch.testing.assert_close(y_fused, y_torch, rtol=1e-5, atol=1e-5)


def test_training_and_other_dtypes_do_not_use_the_fused_operator():
    layer, x = _case(SHAPES[2])
    assert drconv._fused_applies(x, layer.weight)
    assert not drconv._fused_applies(x.double(), layer.weight.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not drconv._fused_applies(x, layer.weight)


@pytest.mark.parametrize("context", [torch.inference_mode, torch.no_grad])
def test_fused_batch_over_several_threads_matches_one_thread(context):
    """Batches run one sample per intra-op thread; the workers must see the caller's inference/grad mode."""
    layer, _ = _case(SHAPES[1])
    x = torch.randn(5, 128, 14, 14)
    with context():
        y_one, mask_one = layer(x, return_mask=True)  # this module's tests run on one thread
        torch.set_num_threads(2)
        try:
            y_two, mask_two = layer(x, return_mask=True)
        finally:
            torch.set_num_threads(1)
    assert torch.equal(mask_two, mask_one)
    torch.testing.assert_close(y_two, y_one, rtol=1e-6, atol=1e-6)
    assert not y_two.requires_grad
