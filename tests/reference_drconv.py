"""Slow, obviously-correct DRConv reference (tests only): explicit filters, im2col, loops.

It reads a ``DRConv2d``'s parameters but shares none of its forward code: the generator, the full per-region
filters W_{b,j} = W0 + U diag(s_{b,j}) V, the guide and all m region responses are computed the plain way,
and the paper's gradient comes from the straight-through form  onehot + softmax - softmax.detach()  instead of
the custom autograd function. Its gradients are therefore the paper's: dL/dF = softmax Jacobian applied to
g_j = <dY, W_j * x>, and each region's filter only receives gradient where that region was chosen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.drconv import DRConv2d


def reference_coefficients(layer: DRConv2d, x: torch.Tensor) -> torch.Tensor:
    """Generator, written as the paper's convolutions: x (B, C, H, W) -> s (B, m, r)."""
    pooled = F.adaptive_avg_pool2d(x, layer.kernel_size)  # (B, C, kh, kw)
    reduce_w = layer.gen_reduce_weight[:, :, None, None]
    hidden = torch.sigmoid(F.conv2d(pooled, reduce_w, layer.gen_reduce_bias))  # (B, g, kh, kw)
    coeffs = F.conv2d(hidden, layer.gen_expand_weight, layer.gen_expand_bias)  # (B, m*r, 1, 1)
    return coeffs.reshape(x.shape[0], layer.region_num, layer.rank)


def reference_filters(layer: DRConv2d, x: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-region filters (B, m, O, C, kh, kw), built one (b, j) at a time."""
    r = layer.rank
    base, basis_in = layer.weight, layer.basis_in
    coeffs = reference_coefficients(layer, x)
    banks = []
    for b in range(x.shape[0]):
        regions = []
        for j in range(layer.region_num):
            update = torch.zeros_like(base)
            for t in range(r):  # sum of rank-1 terms U[:, t] s_t V[t]
                update = (
                    update + coeffs[b, j, t] * layer.basis_out[:, t, None, None, None] * basis_in[t][None]
                )
            regions.append(base + update)
        banks.append(torch.stack(regions))
    return torch.stack(banks)


def reference_drconv(layer: DRConv2d, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, C, H, W) -> (y (B, O, H', W'), mask (B, H', W') int64), with the paper's gradient."""
    o, m = layer.out_channels, layer.region_num
    kh, kw = layer.kernel_size
    cols = F.unfold(x, (kh, kw), dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
    h_out = (x.shape[2] + 2 * layer.padding[0] - layer.dilation[0] * (kh - 1) - 1) // layer.stride[0] + 1
    w_out = (x.shape[3] + 2 * layer.padding[1] - layer.dilation[1] * (kw - 1) - 1) // layer.stride[1] + 1
    guide_w = layer.guide_weight.reshape(m, -1)
    filters = reference_filters(layer, x)
    outputs, masks = [], []
    for b in range(x.shape[0]):
        guide = guide_w @ cols[b] + layer.guide_bias[:, None]  # (m, P)
        mask = guide.argmax(dim=0)
        soft = torch.softmax(guide, dim=0)
        onehot = F.one_hot(mask, m).T.to(guide.dtype)
        gate = onehot + soft - soft.detach()  # value: one-hot; gradient: softmax
        y = torch.zeros(o, cols.shape[2], dtype=x.dtype, device=x.device)
        for j in range(m):
            response = filters[b, j].reshape(o, -1) @ cols[b]  # (O, P): region j's filter everywhere
            y = y + gate[j] * response
        if layer.bias is not None:
            y = y + layer.bias[:, None]
        outputs.append(y.reshape(o, h_out, w_out))
        masks.append(mask.reshape(h_out, w_out))
    return torch.stack(outputs), torch.stack(masks)
