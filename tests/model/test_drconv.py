"""DRConv2d: custom autograd, both execution paths against the slow reference, equivariance, generator."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model.drconv import (
    DRConv2d,
    DRConvConfigError,
    DRConvInputError,
    PointwiseDRConvFunction,
    argmax_onehot,
)
from tests.reference_drconv import reference_coefficients, reference_drconv, reference_filters

# (in, out, kernel, stride, padding, bias, region_num) covering pointwise, k x k, strided, rectangular, biased
POINTWISE = (6, 5, 1, 1, None, False, 4)
POINTWISE_BIAS = (5, 9, 1, 1, 0, True, 8)
KXK_BIAS = (4, 7, 3, 1, None, True, 3)
CONFIGS = [
    POINTWISE,
    POINTWISE_BIAS,
    KXK_BIAS,
    (5, 4, 3, 2, 1, False, 8),
    (3, 4, (1, 3), (2, 1), (0, 1), True, 2),
]


def _layer(config: tuple, dtype: torch.dtype = torch.float64, seed: int = 0) -> DRConv2d:
    c, o, k, s, p, bias, m = config
    torch.manual_seed(seed)
    return DRConv2d(c, o, k, region_num=m, stride=s, padding=p, bias=bias, rank=3).to(dtype)


def _input(channels: int, size: int = 9, dtype: torch.dtype = torch.float64, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, channels, size, size + 1, generator=generator, dtype=dtype)


def test_argmax_onehot_forward_is_the_argmax_one_hot():
    guide = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    onehot = argmax_onehot(guide)
    expected = F.one_hot(guide.argmax(1), 5).permute(0, 3, 1, 2).to(guide.dtype)
    assert torch.equal(onehot, expected)


def test_argmax_onehot_backward_passes_gradcheck_as_the_softmax_jacobian():
    # The forward is piecewise constant, so gradcheck the backward against a function whose *value* is the
    # softmax and whose only gradient path is the custom backward: the numerical Jacobian is then softmax's.
    def softmax_valued(guide: torch.Tensor) -> torch.Tensor:
        return argmax_onehot(guide) - argmax_onehot(guide).detach() + torch.softmax(guide, dim=1).detach()

    guide = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(softmax_valued, (guide,), eps=1e-6, atol=1e-8)


def test_pointwise_function_passes_gradcheck_for_every_input_but_the_guide():
    # Everything but the guide has an exact gradient, so gradcheck applies to it directly. x and the guide
    # rows stay fixed: their gradients carry the guide's softmax surrogate (checked against the reference).
    layer = _layer(POINTWISE_BIAS)
    r = layer.rank
    xv = _input(5, size=4).reshape(2, 5, -1)
    guide_rows = layer.region_weight[r:].detach()

    def function(weight, basis_in, basis_out, reduce_w, reduce_b, expand_w, expand_b):
        region_weight = torch.cat([basis_in, guide_rows])
        y, _ = PointwiseDRConvFunction.apply(
            xv,
            weight,
            region_weight,
            layer.guide_bias.detach(),
            basis_out,
            reduce_w,
            reduce_b,
            expand_w,
            expand_b,
        )
        return y

    inputs = [
        t.detach().clone().requires_grad_()
        for t in (
            layer.weight,
            layer.region_weight[:r],
            layer.basis_out,
            layer.gen_reduce_weight,
            layer.gen_reduce_bias,
            layer.gen_expand_weight,
            layer.gen_expand_bias,
        )
    ]
    assert torch.autograd.gradcheck(function, inputs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("config", CONFIGS)
def test_every_path_matches_reference_forward(config):
    layer = _layer(config)
    x = _input(config[0])
    y_ref, mask_ref = reference_drconv(layer, x)
    with torch.no_grad():
        y_inf, mask_inf = layer.forward_inference(x)
        y_train, mask_train = layer.forward_training(x)
        y_std, mask_std = layer.forward_standard_ops(x)  # what ONNX export traces
    assert y_inf.shape == y_ref.shape
    for mask in (mask_inf, mask_train, mask_std):
        assert mask.dtype == torch.int64 and torch.equal(mask, mask_ref)
    for y in (y_inf, y_train, y_std):
        torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    assert len(mask_ref.unique()) > 1, "test input should use several regions"


@pytest.mark.parametrize("kernel", [1, 3])
def test_standard_ops_formulation_matches_the_inference_path_in_float32(kernel):
    torch.manual_seed(0)
    layer = DRConv2d(16, 24, kernel, region_num=8).eval()
    x = torch.randn(3, 16, 12, 12)
    with torch.no_grad():
        y_inf, mask_inf = layer.forward_inference(x)
        y_std, mask_std = layer.forward_standard_ops(x)
    torch.testing.assert_close(y_std, y_inf, rtol=1e-5, atol=1e-5)
    assert torch.equal(mask_std, mask_inf)


@pytest.mark.parametrize("config", CONFIGS)
def test_training_path_gradients_match_reference(config):
    layer = _layer(config)
    x = _input(config[0]).requires_grad_()
    upstream = torch.randn(reference_drconv(layer, x)[0].shape, dtype=torch.float64)
    inputs = [x, *layer.parameters()]

    y_ref, _ = reference_drconv(layer, x)
    grads_ref = torch.autograd.grad((y_ref * upstream).sum(), inputs)
    y, _ = layer(x, return_mask=True)
    grads = torch.autograd.grad((y * upstream).sum(), inputs)

    names = ["x", *(name for name, _ in layer.named_parameters())]
    for name, grad, grad_ref in zip(names, grads, grads_ref, strict=True):
        torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-10, msg=f"gradient of {name}")
    guide_grad = grads[names.index("region_weight")][layer.rank :]
    assert guide_grad.abs().sum() > 0, "the guide must get the softmax gradient"


def test_weights_get_the_same_gradients_when_the_input_needs_none():
    layer = _layer(POINTWISE)
    x = _input(6)
    grads = torch.autograd.grad(layer(x).square().sum(), list(layer.parameters()))
    grads_with_x = torch.autograd.grad(layer(x.requires_grad_()).square().sum(), list(layer.parameters()))
    for grad, grad_with_x in zip(grads, grads_with_x, strict=True):
        torch.testing.assert_close(grad, grad_with_x, rtol=0, atol=0)


@pytest.mark.parametrize("kernel", [1, 3])
def test_training_fits_content_defined_regions_better_than_a_plain_conv(kernel):
    # Target: one fixed linear map where channel 0 is positive, another elsewhere (content-defined regions).
    torch.manual_seed(0)
    layer = DRConv2d(4, 4, kernel, region_num=2, rank=4)
    x = torch.randn(8, 4, 6, 6)
    first, second = torch.randn(4, 4), torch.randn(4, 4)
    use_first = (x[:, :1] > 0).float()
    target = use_first * torch.einsum("oc,bchw->bohw", first, x)
    target = target + (1 - use_first) * torch.einsum("oc,bchw->bohw", second, x)
    guide_before = layer.guide_weight.detach().clone()
    plain = nn.Conv2d(4, 4, kernel, padding=kernel // 2)

    def fit(module: nn.Module) -> float:
        optimizer = torch.optim.Adam(module.parameters(), lr=0.02)
        for _ in range(60):
            optimizer.zero_grad()
            loss = F.mse_loss(module(x), target)
            loss.backward()
            optimizer.step()
        return loss.item()

    assert fit(layer) < 0.8 * fit(plain), "regions should fit what one shared filter cannot"
    assert not torch.allclose(layer.guide_weight, guide_before), "the guide must learn"


def test_deterministic_mode_gives_the_same_gradients():
    layer = _layer(POINTWISE_BIAS)
    x = _input(5).requires_grad_()
    inputs = [x, *layer.parameters()]
    grads = torch.autograd.grad(layer(x).square().sum(), inputs)
    torch.use_deterministic_algorithms(True)
    try:
        grads_deterministic = torch.autograd.grad(layer(x).square().sum(), inputs)
    finally:
        torch.use_deterministic_algorithms(False)
    for grad, grad_deterministic in zip(grads, grads_deterministic, strict=True):
        torch.testing.assert_close(grad_deterministic, grad, rtol=1e-12, atol=1e-12)


def test_guide_gradient_is_the_papers_formula():
    layer = _layer(POINTWISE)
    x = _input(6)
    o = layer.out_channels
    upstream = torch.randn(2, o, 9, 10, dtype=torch.float64)
    guide = F.conv2d(x, layer.guide_weight, layer.guide_bias)
    guide.retain_grad()
    # rebuild the layer's output from this guide tensor through the training path's custom function
    onehot = argmax_onehot(guide)
    filters = reference_filters(layer, x).detach()  # (B, m, O, C, 1, 1)
    responses = torch.einsum("bjoc,bchw->bjohw", filters[..., 0, 0], x)  # (B, m, O, H, W)
    y = (onehot.unsqueeze(2) * responses).sum(1)
    (y * upstream).sum().backward()

    g = (responses * upstream.unsqueeze(1)).sum(2)  # g_j = <dY, W_j * x>, (B, m, H, W)
    s = torch.softmax(guide.detach(), dim=1)
    expected = s * (g - (s * g).sum(1, keepdim=True))
    torch.testing.assert_close(guide.grad, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kernel", [1, 3])
def test_paths_agree_in_float32_whatever_the_module_mode(kernel):
    torch.manual_seed(0)
    layer = DRConv2d(16, 24, kernel, region_num=8)
    x = torch.randn(3, 16, 12, 12)
    outputs = []
    for mode in (True, False):
        layer.train(mode)
        with torch.no_grad():
            outputs.append(layer(x, return_mask=True))  # inference path
        outputs.append(layer(x, return_mask=True))  # training path (grad recorded)
    for y, mask in outputs[1:]:
        torch.testing.assert_close(y, outputs[0][0], rtol=1e-5, atol=1e-5)
        assert torch.equal(mask, outputs[0][1])
    assert outputs[1][0].requires_grad and not outputs[0][0].requires_grad


@pytest.mark.parametrize("config", CONFIGS)
def test_generated_filters_match_reference(config):
    layer = _layer(config)
    x = _input(config[0])
    torch.testing.assert_close(layer.region_coefficients(x), reference_coefficients(layer, x))
    torch.testing.assert_close(layer.generate_filters(x), reference_filters(layer, x))


def test_generator_is_dynamic_and_deterministic():
    layer = _layer(KXK_BIAS)
    x_a, x_b = _input(4, seed=1), _input(4, seed=2)
    with torch.no_grad():
        filters_a = layer.generate_filters(x_a)
        assert torch.equal(filters_a, layer.generate_filters(x_a.clone()))
        filters_b = layer.generate_filters(x_b)
        y_a, mask_a = layer(x_a, return_mask=True)
        y_a2, mask_a2 = layer(x_a.clone(), return_mask=True)
    assert (filters_a - filters_b).abs().amax() > 1e-3
    # within one batch, two different samples get different filters too
    assert (filters_a[0] - filters_a[1]).abs().amax() > 1e-3
    # and the regions of one sample get different filters
    assert (filters_a[0, 0] - filters_a[0, 1]).abs().amax() > 1e-3
    assert torch.equal(y_a, y_a2) and torch.equal(mask_a, mask_a2)


def _shift(t: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    return torch.roll(t, shifts=(dy, dx), dims=(-2, -1))


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_translation_equivariance(stride):
    # A patch inside a zero border: the shift keeps the generator's global mean, so the filters stay the same.
    torch.manual_seed(0)
    layer = DRConv2d(5, 6, 1, region_num=4, stride=stride).double()
    x = torch.zeros(1, 5, 16, 16, dtype=torch.float64)
    x[..., 4:10, 3:9] = torch.randn(1, 5, 6, 6, dtype=torch.float64)
    shift = 2 * stride
    with torch.no_grad():
        y, mask = layer(x, return_mask=True)
        y_s, mask_s = layer(_shift(x, shift, shift), return_mask=True)
    d = shift // stride
    torch.testing.assert_close(y_s[..., d:, d:], y[..., :-d, :-d], rtol=1e-10, atol=1e-12)
    assert torch.equal(mask_s[..., d:, d:], mask[..., :-d, :-d])


@pytest.mark.parametrize("stride", [1, 2])
def test_kxk_translation_equivariance_in_the_interior(stride):
    # The 3x3 generator pools to 3x3 bins; an input periodic with the bin size (5) has every bin equal to the
    # period mean whatever the shift, so the filters are the same and the interior output must just move.
    torch.manual_seed(0)
    layer = DRConv2d(4, 6, 3, region_num=5, stride=stride).double()
    period = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    x = period.repeat(1, 1, 3, 3)  # (1, 4, 15, 15)
    shift = 2
    with torch.no_grad():
        y, mask = layer(x, return_mask=True)
        y_s, mask_s = layer(_shift(x, shift, shift), return_mask=True)
    d = shift // stride
    # away from the zero padding (first/last output) and from the rows that wrapped around in the roll
    shifted, original = (..., slice(1 + d, -1), slice(1 + d, -1)), (..., slice(1, -1 - d), slice(1, -1 - d))
    torch.testing.assert_close(y_s[shifted], y[original], rtol=1e-10, atol=1e-12)
    assert torch.equal(mask_s[shifted], mask[original])
    assert len(mask.unique()) > 1


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "dilation"), [(1, 1, 0, 1), (3, 2, 1, 1), (3, 1, 2, 2), (5, 2, 0, 1)]
)
def test_output_shape_matches_conv2d(kernel, stride, padding, dilation):
    layer = DRConv2d(3, 8, kernel, stride=stride, padding=padding, dilation=dilation)
    conv = nn.Conv2d(3, 8, kernel, stride=stride, padding=padding, dilation=dilation)
    x = torch.randn(2, 3, 13, 11)
    y, mask = layer(x, return_mask=True)
    assert y.shape == conv(x).shape
    assert mask.shape == (2, *y.shape[2:]) and mask.dtype == torch.int64
    assert int(mask.min()) >= 0 and int(mask.max()) < layer.region_num


def test_channels_last_input_gives_the_same_output():
    torch.manual_seed(0)
    layer = DRConv2d(8, 16, 1)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        y, mask = layer(x, return_mask=True)
        y_cl, mask_cl = layer(x.contiguous(memory_format=torch.channels_last), return_mask=True)
    torch.testing.assert_close(y_cl, y)
    assert torch.equal(mask_cl, mask)


def test_default_padding_keeps_the_size():
    assert DRConv2d(4, 4, 3)(torch.randn(1, 4, 7, 7)).shape == (1, 4, 7, 7)


@pytest.mark.parametrize("kernel", [1, 3])
def test_cpu_autocast_bfloat16_forward_and_backward(kernel):
    torch.manual_seed(0)
    layer = DRConv2d(8, 16, kernel, region_num=4)
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, mask = layer(x, return_mask=True)
        with torch.no_grad():
            y_infer, mask_infer = layer(x, return_mask=True)
    assert y.dtype == y_infer.dtype == torch.bfloat16
    y.float().square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    y32, mask32 = layer(x, return_mask=True)
    for low, low_mask in ((y, mask), (y_infer, mask_infer)):
        same = (low_mask == mask32).unsqueeze(1).expand_as(low)  # near-ties may flip a region in bfloat16
        assert same.float().mean() > 0.9
        torch.testing.assert_close(low.float()[same], y32.detach()[same], rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 0},
        {"region_num": 0},
        {"kernel_size": (1, 2, 3)},
        {"stride": 0},
        {"padding": -1},
        {"rank": 0},
        {"generator_channels": 0},
    ],
)
def test_bad_arguments_raise_config_error(kwargs):
    args = {"in_channels": 4, "out_channels": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(DRConvConfigError):
        DRConv2d(**args)


def test_wrong_input_raises_input_error():
    layer = DRConv2d(4, 4, 1)
    with pytest.raises(DRConvInputError, match="4 input channels"):
        layer(torch.randn(1, 3, 5, 5))
    with pytest.raises(DRConvInputError, match=r"\(B, C, H, W\)"):
        layer(torch.randn(4, 5, 5))


def test_parameter_count_stays_near_a_plain_conv():
    layer = DRConv2d(128, 512, 1, region_num=8)
    conv_params = 128 * 512
    naive_generator = 8**2 * 128 * 512
    total = sum(p.numel() for p in layer.parameters())
    assert total < 1.5 * conv_params < naive_generator
