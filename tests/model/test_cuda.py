"""DRConv and the backbone on CUDA (run where a GPU is present, skipped elsewhere).

The fused operator is CPU only, so on CUDA every DRConv path is the pure-PyTorch one; these tests hold it to
the same reference as on CPU (float64), check the deterministic-algorithms variant of the backward, and run
fp16 autocast and a whole training step of the backbone.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.drconv import DRConv2d
from model.mobilefacenet import INPUT_SIZE, BackboneConfig, MobileFaceNet
from tests.model.test_drconv import CONFIGS, _input, _layer
from tests.reference_drconv import reference_drconv

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


@pytest.mark.parametrize("config", CONFIGS)
def test_cuda_forward_and_gradients_match_the_cpu_reference(config):
    layer = _layer(config)
    x = _input(config[0]).requires_grad_()
    y_ref, mask_ref = reference_drconv(layer, x)
    upstream = torch.randn(y_ref.shape, dtype=torch.float64)
    grads_ref = torch.autograd.grad((y_ref * upstream).sum(), [x, *layer.parameters()])

    layer_cuda = copy.deepcopy(layer).to(CUDA)
    x_cuda = x.detach().to(CUDA).requires_grad_()
    with torch.no_grad():
        y_inf, mask_inf = layer_cuda(x_cuda, return_mask=True)
    y, mask = layer_cuda(x_cuda, return_mask=True)
    grads = torch.autograd.grad((y * upstream.to(CUDA)).sum(), [x_cuda, *layer_cuda.parameters()])

    assert torch.equal(mask.cpu(), mask_ref) and torch.equal(mask_inf.cpu(), mask_ref)
    torch.testing.assert_close(y.cpu(), y_ref, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(y_inf.cpu(), y_ref, rtol=1e-9, atol=1e-10)
    names = ["x", *(name for name, _ in layer.named_parameters())]
    for name, grad, grad_ref in zip(names, grads, grads_ref, strict=True):
        torch.testing.assert_close(grad.cpu(), grad_ref, rtol=1e-9, atol=1e-10, msg=f"gradient of {name}")


def test_cuda_deterministic_backward_gives_the_same_gradients():
    layer = DRConv2d(16, 24, 1, region_num=8).double().to(CUDA)
    x = torch.randn(3, 16, 12, 12, dtype=torch.float64, device=CUDA, requires_grad=True)
    upstream = torch.randn(3, 24, 12, 12, dtype=torch.float64, device=CUDA)

    def gradients() -> list[torch.Tensor]:
        return list(torch.autograd.grad((layer(x) * upstream).sum(), [x, *layer.parameters()]))

    default = gradients()
    torch.use_deterministic_algorithms(True)
    try:
        deterministic = gradients()
    finally:
        torch.use_deterministic_algorithms(False)
    for grad, grad_det in zip(default, deterministic, strict=True):
        torch.testing.assert_close(grad, grad_det, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kernel", [1, 3])
def test_cuda_autocast_float16_forward_and_backward(kernel):
    torch.manual_seed(0)
    layer = DRConv2d(8, 16, kernel, region_num=4).to(CUDA)
    x = torch.randn(2, 8, 8, 8, device=CUDA, requires_grad=True)
    with torch.autocast("cuda", dtype=torch.float16):
        y, mask = layer(x, return_mask=True)
    assert y.dtype == torch.float16
    y.float().square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    y32, mask32 = layer(x, return_mask=True)
    same = (mask == mask32).unsqueeze(1).expand_as(y)  # near-ties may flip a region in float16
    assert same.float().mean() > 0.9
    torch.testing.assert_close(y.float()[same], y32.detach()[same], rtol=0.01, atol=0.01)


def test_backbone_on_cuda_matches_cpu_and_trains():
    torch.manual_seed(0)
    model = MobileFaceNet(BackboneConfig()).eval()
    faces = torch.randn(2, 3, INPUT_SIZE, INPUT_SIZE)
    with torch.inference_mode():
        cpu = F.normalize(model(faces), dim=1)
    model_cuda = copy.deepcopy(model).to(CUDA)
    with torch.inference_mode():
        gpu = F.normalize(model_cuda(faces.to(CUDA)), dim=1).cpu()
    assert (cpu - gpu).abs().max() < 1e-3

    model_cuda.train()
    optimizer = torch.optim.SGD(model_cuda.parameters(), lr=0.01)
    loss = model_cuda(torch.randn(4, 3, INPUT_SIZE, INPUT_SIZE, device=CUDA)).square().mean()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all()
        for p in model_cuda.parameters()
        if p.requires_grad
    )


def test_batches_assembled_on_cuda_match_the_cpu_ones():
    # On a GPU the training set lives on the device and augmentation runs there: same batch as on the CPU
    # (same rows, labels and teacher rows; pixels equal up to float rounding of the affine resampling).
    from training.config import AugmentConfig
    from training.data import UNLABELLED, BatchSource

    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (40, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    labels = np.array([i % 5 for i in range(30)] + [UNLABELLED] * 10, np.int64)
    teacher = rng.standard_normal((40, 16)).astype(np.float32)
    args = (faces, labels, 16, 3, AugmentConfig())
    cpu = BatchSource(*args, teacher=teacher)
    gpu = BatchSource(*args, teacher=teacher, device=CUDA)
    for epoch, step in ((0, 0), (1, 1)):
        (cpu_images, cpu_labels, cpu_teacher), (gpu_images, gpu_labels, gpu_teacher) = (
            cpu.batch(epoch, step),
            gpu.batch(epoch, step),
        )
        assert gpu_images.device.type == "cuda" and gpu_images.shape == (16, 3, INPUT_SIZE, INPUT_SIZE)
        assert torch.equal(gpu_labels.cpu(), cpu_labels)
        assert torch.equal(gpu_teacher.cpu(), cpu_teacher)
        assert (gpu_images.cpu() - cpu_images).abs().max() < 1e-3
