"""Dynamic Region-Aware Convolution (DRConv, Chen et al., CVPR 2021) as a drop-in for ``nn.Conv2d``.

Shapes: input ``x`` (B, C, H, W); output ``y`` (B, O, H', W') with H', W' those of ``nn.Conv2d`` with the
same kernel / stride / padding / dilation; guided mask (B, H', W') int64 in [0, m), m = ``region_num``.

The layer, per sample b and output pixel p:
1. guide   F = conv_k(x) with m channels; mask(p) = argmax_j F_j(p)
2. filters W_{b,j} = W0 + U diag(s_{b,j}) V          (j = 0..m-1, each (O, C, k, k))
   with s_b = G(x_b) in R^{m x r} from the filter generator
   G = adaptive-avg-pool to k x k -> 1x1 conv C->g -> sigmoid -> k x k conv over the pooled map g -> m*r
3. y(p)    = (W_{b, mask(p)} * x)(p) + bias

Why a low-rank generator: the paper's generator ends with a 1x1 conv g -> m*O*C*k*k, so each region's
filter is an affine function of g hidden units (a (g+1)-dim subspace per region) and costs g*m*O*C*k*k weights
(m^2*C*O in the public re-implementation). Here every region's filter lives in the same r-dim affine subspace
spanned by rank-1 factors ``U[:, t] V[t]`` around a shared base ``W0``; the generator produces the m*r
coordinates. Then
    (W_{b,j} * x)(p) = (W0 * x)(p) + U (s_{b,j} ⊙ (V * x)(p)),
so the chosen filter's response at every pixel needs W0 * x plus an r-channel update, never the m responses.

Execution paths (``forward`` picks by autograd state, not by ``train()`` / ``eval()``; outputs are equal):
- 1x1 inference on CPU in float32, when the fused operator is built (``model/fused.py``): one C++ call,
  ``torch.ops.drface.pointwise_infer``: per sample and chunk of pixels one product [W0; V; guide] @ x, the
  argmax and selection in one pass over the chunk, the rank update accumulated in place while the chunk is in
  cache; the generator inside the same call. Otherwise the PyTorch path below.
- 1x1, stride 1 (the backbone's pointwise convs), x viewed as (B, C, P): one narrow batched product
  [V; guide] @ x gives V x and the guide (r + m rows); mask = argmax of the guide; each pixel's coefficients
  are gathered from s_b (B, r, m) by the mask; y = U (s ⊙ V x) is written first and the main product W0 @ x
  accumulates onto it (baddbmm_), so y is written once. The generator pools x to (B, C).
  Training runs the same forward inside ``PointwiseDRConvFunction``, whose hand-written backward accumulates
  all of dL/dx in one buffer and gets the paper's region gradient from g_j(p) = <U^T dY(p), s_j ⊙ V x(p)>,
  an (m x r) @ (r x P) product (the W0 x term is the same for every region and cancels in the softmax
  Jacobian).
- any other kernel / stride / padding: one ``F.conv2d`` with O + r + m output channels, then the same
  selection; training uses ``argmax_onehot`` (custom autograd) and autograd for the rest.
- ONNX export (``torch.onnx.export``, see model/export.py): ``forward_standard_ops``, the inference function
  written in ops every ONNX runtime has: MatMul (or Conv for k x k) for [V; guide] x and W0 x, ArgMax for the
  mask, GatherElements for each pixel's region coefficients, MatMul for U (s ⊙ V x). No in-place op, no
  fused operator; the shapes stay symbolic, so the batch and the image size can be dynamic.

Gradient through argmax (the paper's): forward uses the one-hot mask, backward uses softmax(F):
dL/dF(p) = s ⊙ (g − <s, g>), s = softmax(F(p)), g_j = dL/d onehot_j(p) = <dL/dy(p), (W_j * x)(p)>.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from model import fused

IntOrPair = int | tuple[int, int]


class DRConvConfigError(ValueError):
    """Invalid DRConv2d constructor argument."""


class DRConvInputError(ValueError):
    """Input tensor incompatible with the layer (wrong rank or channel count)."""


class ArgmaxSoftmaxGrad(torch.autograd.Function):
    """One-hot argmax over dim 1 in forward, softmax Jacobian in backward (the paper's region gradient).

    forward: guide (B, m, ...) float -> one-hot (B, m, ...) same dtype, 1 at argmax_j guide_j.
    backward: d guide = s ⊙ (g − <s, g>) with s = softmax(guide, dim=1), g the incoming gradient.
    """

    @staticmethod
    def forward(ctx, guide: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(guide)
        return torch.zeros_like(guide).scatter_(1, region_index(guide).unsqueeze(1), 1.0)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_onehot: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (guide,) = ctx.saved_tensors
        # float32 at least, so the softmax is stable under autocast (fp16/bf16 guides)
        compute = torch.promote_types(guide.dtype, torch.float32)
        s = torch.softmax(guide.to(compute), dim=1)
        g = grad_onehot.to(compute)
        grad = s * (g - (s * g).sum(dim=1, keepdim=True))
        return grad.to(guide.dtype)


def region_index(guide: torch.Tensor) -> torch.Tensor:
    """(B, m, ...) guide -> (B, ...) int64 index of the largest channel (first one on ties)."""
    # max(...).indices: same result as argmax, several times faster over dim 1 on CPU
    return guide.max(dim=1).indices


def argmax_onehot(guide: torch.Tensor) -> torch.Tensor:
    """(B, m, ...) guide -> (B, m, ...) one-hot of its argmax; softmax gradient in backward."""
    return ArgmaxSoftmaxGrad.apply(guide)


def _pointwise_forward(
    xv: torch.Tensor,
    weight: torch.Tensor,
    region_weight: torch.Tensor,
    guide_bias: torch.Tensor,
    basis_out: torch.Tensor,
    coeffs: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """1x1 DRConv computing only the chosen filter per pixel.

    xv (B, C, P); weight W0 (O, C); region_weight [V; guide] (r + m, C); guide_bias (m,); basis_out U (O, r);
    coeffs s (B, r, m). Returns y (B, O, P), mask (B, P) int64 and [V x; guide without bias] (B, r + m, P).
    """
    b, c, p = xv.shape
    o, r = basis_out.shape
    m = guide_bias.shape[0]
    # V x and the guide from one narrow product
    region = torch.bmm(region_weight.unsqueeze(0).expand(b, r + m, c), xv)
    proj = region.narrow(1, 0, r)
    guide = region.narrow(1, r, m) + guide_bias.unsqueeze(1)
    mask = region_index(guide)
    selected = torch.gather(coeffs, 2, mask.unsqueeze(1).expand(b, r, p))
    y = torch.bmm(basis_out.unsqueeze(0).expand(b, o, r), selected * proj)  # U (s_mask ⊙ V x)
    # the main product accumulates onto the rank update: no second pass over y
    y.baddbmm_(weight.unsqueeze(0).expand(b, o, c), xv)
    return y, mask, region


def _generator_coefficients(
    pooled: torch.Tensor,
    reduce_weight: torch.Tensor,
    reduce_bias: torch.Tensor,
    expand_weight: torch.Tensor,
    expand_bias: torch.Tensor,
    region_num: int,
) -> torch.Tensor:
    """Generator after pooling: pooled (B, C) or (B, k*k, C) -> s (B, r, m), column j for region j.

    reduce: (g, C) 1x1 conv then sigmoid; expand: (m*r, g*k*k), the k x k conv over the pooled k x k map
    written as a linear map of the g-major flattened hidden state.
    """
    hidden = torch.sigmoid(F.linear(pooled, reduce_weight, reduce_bias))
    if hidden.dim() == 3:
        hidden = hidden.transpose(1, 2).flatten(1)  # (B, g*k*k), g-major like the conv weight
    coeffs = F.linear(hidden, expand_weight, expand_bias)
    return coeffs.view(pooled.shape[0], region_num, -1).transpose(1, 2)


def _autocast_dtype(tensor: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast runs matmuls in on ``tensor``'s device, or None when autocast is off there."""
    device = tensor.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None


def _pointwise_layer(
    xv: torch.Tensor, *params: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """Whole 1x1 DRConv, generator included; under autocast, all of it in the autocast dtype.

    xv (B, C, P); params as stored by ``DRConv2d``: weight, region_weight, guide_bias, basis_out,
    reduce_weight, reduce_bias, expand_weight, expand_bias. Returns y (B, O, P), mask (B, P) and what the
    backward needs.
    """
    autocast_dtype = _autocast_dtype(xv)
    if autocast_dtype is not None:
        with torch.autocast(xv.device.type, enabled=False):
            return _pointwise_layer(xv.to(autocast_dtype), *(t.to(autocast_dtype) for t in params))
    dtype = xv.dtype
    if any(t.dtype != dtype for t in params):
        params = tuple(t.to(dtype) for t in params)
    weight, region_weight, guide_bias, basis_out, reduce_weight, reduce_bias, expand_weight, expand_bias = (
        params
    )
    b, c, _ = xv.shape
    m = guide_bias.shape[0]
    weight, region_weight = weight.reshape(-1, c), region_weight.reshape(-1, c)
    expand_weight = expand_weight.reshape(expand_weight.shape[0], -1)
    pooled = xv.mean(dim=2)
    hidden = torch.sigmoid(F.linear(pooled, reduce_weight, reduce_bias))  # (B, g)
    coeffs = F.linear(hidden, expand_weight, expand_bias).view(b, m, -1).transpose(1, 2)  # (B, r, m)
    y, mask, region = _pointwise_forward(xv, weight, region_weight, guide_bias, basis_out, coeffs)
    # for the backward: O(r + m) values per pixel besides x; the guide and selection are recomputed
    saved = (xv, weight, region_weight, guide_bias, basis_out, coeffs, region, mask, pooled, hidden)
    return y, mask, (*saved, reduce_weight, expand_weight)


class PointwiseDRConvFunction(torch.autograd.Function):
    """Fused 1x1 DRConv (generator included) with a hand-written backward, for training.

    forward(xv (B, C, P), weight W0 (O, C, 1, 1), region_weight [V; guide] (r + m, C, 1, 1), guide_bias (m,),
    basis_out U (O, r), reduce_weight (g, C), reduce_bias (g,), expand_weight (m*r, g, 1, 1),
    expand_bias (m*r,)) -> y (B, O, P), mask (B, P) int64. Weights are taken as the module stores them so
    that no view of a parameter enters the autograd graph.
    backward: exact gradients for everything but the guide, which gets the paper's softmax gradient
    d guide = s ⊙ (g − <s, g>) with g_j(p) = <dY(p), U (s_j ⊙ V x(p))> (the W0 x term is the same for every
    region and cancels). All gradients of x are accumulated in one (B, C, P) buffer.
    """

    @staticmethod
    def forward(ctx, xv, *params):  # type: ignore[override]
        ctx.shapes = [(t.shape, t.dtype) for t in (xv, *params)]
        y, mask, saved = _pointwise_layer(xv, *params)
        ctx.save_for_backward(*saved)
        ctx.mark_non_differentiable(mask)
        return y, mask

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, _grad_mask):  # type: ignore[override]
        (xv, weight, region_weight, guide_bias, basis_out, coeffs, region, mask,
         pooled, hidden, reduce_weight, expand_weight) = ctx.saved_tensors  # fmt: skip
        b, c, p = xv.shape
        o, r = basis_out.shape
        m = guide_bias.shape[0]
        proj, guide = region.narrow(1, 0, r), region.narrow(1, r, m) + guide_bias.unsqueeze(1)
        index = mask.unsqueeze(1).expand(b, r, p)
        selected = torch.gather(coeffs, 2, index)  # (B, r, P): each pixel's region coefficients
        grad_y = grad_y.to(xv.dtype)
        xt = xv.transpose(1, 2)
        grad_weight = torch.bmm(grad_y, xt).sum(0)  # (O, C)
        grad_basis_out = torch.bmm(grad_y, (selected * proj).transpose(1, 2)).sum(0)  # (O, r)
        grad_update = torch.bmm(basis_out.t().unsqueeze(0).expand(b, r, o), grad_y)  # (B, r, P)
        grad_selected = grad_update * proj
        grad_proj = grad_update.mul_(selected)
        # each region's coefficients collect the gradient of that region's pixels
        if torch.are_deterministic_algorithms_enabled():  # scatter_add_ uses atomics on CUDA
            onehot = torch.zeros_like(guide).scatter_(1, mask.unsqueeze(1), 1.0)  # (B, m, P)
            grad_coeffs = torch.bmm(grad_selected, onehot.transpose(1, 2))
        else:
            grad_coeffs = torch.zeros_like(coeffs).scatter_add_(2, index, grad_selected)  # (B, r, m)
        # the paper's region gradient: g_j(p) = <s_j, grad_selected(p)>, through the softmax Jacobian
        softmax_dtype = torch.promote_types(guide.dtype, torch.float32)  # stable under fp16/bf16 autocast
        g = torch.bmm(coeffs.transpose(1, 2), grad_selected).to(softmax_dtype)  # (B, m, P)
        soft = torch.softmax(guide.to(softmax_dtype), dim=1)
        grad_guide = (soft * (g - (soft * g).sum(dim=1, keepdim=True))).to(xv.dtype)
        grad_region = torch.cat([grad_proj, grad_guide], dim=1)  # (B, r + m, P)
        grad_region_weight = torch.bmm(grad_region, xt).sum(0)  # (r + m, C)
        # generator: expand (linear) <- sigmoid <- reduce (linear) <- mean pool
        grad_expanded = grad_coeffs.transpose(1, 2).reshape(b, m * r)
        grad_hidden_pre = (grad_expanded @ expand_weight) * hidden * (1 - hidden)
        grad_pooled = grad_hidden_pre @ reduce_weight  # (B, C)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(weight.t().unsqueeze(0).expand(b, c, o), grad_y)
            grad_x.baddbmm_(region_weight.t().unsqueeze(0).expand(b, c, r + m), grad_region)
            grad_x.add_((grad_pooled / p).unsqueeze(2))
        grads = (
            grad_x,
            grad_weight,
            grad_region_weight,
            grad_guide.sum(dim=(0, 2)),
            grad_basis_out,
            grad_hidden_pre.t() @ pooled,
            grad_hidden_pre.sum(0),
            grad_expanded.t() @ hidden,
            grad_expanded.sum(0),
        )
        return tuple(
            None if grad is None else grad.reshape(shape).to(dtype)
            for grad, (shape, dtype) in zip(grads, ctx.shapes, strict=True)
        )


def _fused_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Inference can use the fused CPU operator (model/fused.py): built, float32 on CPU, no autocast."""
    # cheapest checks first: at batch 1 this runs once per layer and call
    return (
        x.is_cpu
        and x.dtype is torch.float32
        and weight.dtype is torch.float32
        and fused.available()
        and not torch.is_autocast_enabled("cpu")
    )


def _pair(value: IntOrPair, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise DRConvConfigError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


_POINTWISE_PARAM_NAMES = (
    "weight",
    "region_weight",
    "guide_bias",
    "basis_out",
    "gen_reduce_weight",
    "gen_reduce_bias",
    "gen_expand_weight",
    "gen_expand_bias",
)


REGION_NUM = 8
"""The paper's region number m; the default of `DRConv2d` and of `BackboneConfig.region_num`."""


class DRConv2d(nn.Module):
    """Dynamic region-aware convolution; a drop-in for ``nn.Conv2d`` (groups=1).

    Args:
        in_channels: C.
        out_channels: O.
        kernel_size: k (int or pair).
        region_num: m, number of regions of the guided mask (paper: 8).
        stride, dilation: as ``nn.Conv2d``.
        padding: as ``nn.Conv2d``; ``None`` means "same"-style ``dilation * (k - 1) // 2``.
        bias: add a learned (O,) bias shared by all regions. Default False (DRConv is usually followed by BN).
        rank: r, rank of the per-region filter update; default ``min(8, C, O)``.
        generator_channels: g, hidden width of the filter generator; default ``max(4, min(16, C // 8))``.

    ``forward(x, return_mask=False)``: x (B, C, H, W) -> y (B, O, H', W'), or (y, mask (B, H', W') int64).
    With autograd recording (grad enabled and a parameter or ``x`` requiring grad) the training path runs and
    gives the paper's gradient; otherwise the inference path runs. Both give the same outputs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        region_num: int = REGION_NUM,
        stride: IntOrPair = 1,
        padding: IntOrPair | None = None,
        dilation: IntOrPair = 1,
        bias: bool = False,
        rank: int | None = None,
        generator_channels: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or value < 1:
                raise DRConvConfigError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(region_num, int) or region_num < 1:
            raise DRConvConfigError(f"region_num must be a positive int, got {region_num!r}")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.dilation = _pair(dilation, "dilation")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.dilation) < 1:
            raise DRConvConfigError("kernel_size, stride and dilation must be >= 1")
        if padding is None:
            padding = tuple(d * (k - 1) // 2 for k, d in zip(self.kernel_size, self.dilation, strict=True))
        self.padding = _pair(padding, "padding")
        if min(self.padding) < 0:
            raise DRConvConfigError(f"padding must be >= 0, got {padding!r}")
        rank = min(8, in_channels, out_channels) if rank is None else rank
        if generator_channels is None:
            generator_channels = max(4, min(16, in_channels // 8))
        if not isinstance(rank, int) or rank < 1:
            raise DRConvConfigError(f"rank must be a positive int, got {rank!r}")
        if not isinstance(generator_channels, int) or generator_channels < 1:
            raise DRConvConfigError(f"generator_channels must be a positive int, got {generator_channels!r}")

        # 1x1 kernel, stride 1, no padding: the layer is a per-pixel matrix product
        self._pointwise = self.kernel_size == (1, 1) and self.padding == (0, 0) and self.stride == (1, 1)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.region_num = region_num
        self.rank = rank
        self.generator_channels = generator_channels
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kh, kw))  # W0, shared base filter
        # rows [0, r): the rank-update projection V; rows [r, r + m): the guide conv (one product for both)
        self.region_weight = nn.Parameter(torch.empty(rank + region_num, in_channels, kh, kw))
        self.basis_out = nn.Parameter(torch.empty(out_channels, rank))  # U
        self.guide_bias = nn.Parameter(torch.empty(region_num))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        # filter generator: pool to k x k -> 1x1 conv C->g -> sigmoid -> k x k conv g -> m*r
        self.gen_reduce_weight = nn.Parameter(torch.empty(generator_channels, in_channels))
        self.gen_reduce_bias = nn.Parameter(torch.empty(generator_channels))
        self.gen_expand_weight = nn.Parameter(torch.empty(region_num * rank, generator_channels, kh, kw))
        self.gen_expand_bias = nn.Parameter(torch.empty(region_num * rank))
        self.reset_parameters()

    # ---- parameters -------------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """nn.Conv2d-style init for every conv-like weight; the rank update starts at the base's scale."""
        for weight, bias in (
            (self.weight, self.bias),
            (self.region_weight[: self.rank], None),
            (self.region_weight[self.rank :], self.guide_bias),
            (self.basis_out, None),
            (self.gen_reduce_weight, self.gen_reduce_bias),
            (self.gen_expand_weight, self.gen_expand_bias),
        ):
            with torch.no_grad():
                nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            if bias is not None:
                bound = 1 / math.sqrt(weight[0].numel())
                nn.init.uniform_(bias, -bound, bound)

    @property
    def basis_in(self) -> torch.Tensor:
        """V (r, C, kh, kw): projection of the rank-r filter update (a view of ``region_weight``)."""
        return self.region_weight[: self.rank]

    @property
    def guide_weight(self) -> torch.Tensor:
        """Guide conv weight (m, C, kh, kw) (a view of ``region_weight``)."""
        return self.region_weight[self.rank :]

    # ---- generator --------------------------------------------------------------------------------------
    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """Generator input: x (B, C, H, W) -> (B, C) for 1x1 kernels, else (B, k*k, C) pooled to k x k."""
        kh, kw = self.kernel_size
        if kh == kw == 1:
            return x.mean(dim=(2, 3))
        return F.adaptive_avg_pool2d(x, (kh, kw)).flatten(2).transpose(1, 2)

    def _coefficients(self, pooled: torch.Tensor) -> torch.Tensor:
        """Generator tail: pooled (B, C) or (B, k*k, C) -> s (B, r, m), column j = region j's coefficients."""
        return _generator_coefficients(
            pooled,
            self.gen_reduce_weight,
            self.gen_reduce_bias,
            self.gen_expand_weight.flatten(1),
            self.gen_expand_bias,
            self.region_num,
        )

    def region_coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """Filter generator: x (B, C, H, W) -> s (B, m, r); region j's filter is W0 + U diag(s[:, j]) V."""
        return self._coefficients(self._pool(x)).transpose(1, 2)

    def generate_filters(self, x: torch.Tensor) -> torch.Tensor:
        """The full per-sample filter banks (B, m, O, C, kh, kw). For inspection and tests; O(B*m*O*C*k*k)."""
        coeffs = self.region_coefficients(x)
        update = torch.einsum("or,bjr,rckl->bjockl", self.basis_out, coeffs, self.basis_in)
        return self.weight.unsqueeze(0).unsqueeze(0) + update

    # ---- forward ----------------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        if (
            torch.jit.is_tracing()
        ):  # shapes are tensors in a trace: the check would warn and become a constant
            return
        if x.dim() != 4:
            raise DRConvInputError(f"DRConv2d expects (B, C, H, W) input, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise DRConvInputError(f"DRConv2d expects {self.in_channels} input channels, got {x.shape[1]}")

    def _pointwise_params(self) -> tuple[torch.Tensor, ...]:
        """The parameters in ``_pointwise_layer``'s order (read from the dict: cheaper than 8 getattrs)."""
        params = self._parameters
        return tuple(params[name] for name in _POINTWISE_PARAM_NAMES)  # type: ignore[misc]

    def _forward_pointwise(self, x: torch.Tensor, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """1x1, stride 1, no padding: everything is a per-pixel product over (B, C, P), P = H * W."""
        params = self._pointwise_params()
        if not training and _fused_applies(x, params[0]):
            return torch.ops.drface.pointwise_infer.default(x, *params)
        b, c, h, w = x.shape
        xv = x.reshape(b, c, h * w)
        if training:
            y, mask = PointwiseDRConvFunction.apply(xv, *params)
        else:
            y, mask, _ = _pointwise_layer(xv, *params)
        return y.view(b, self.out_channels, h, w), mask.view(b, h, w)

    def _forward_general(
        self, x: torch.Tensor, differentiable_mask: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Any kernel / stride / padding: one conv for [V; guide; W0], then the same per-pixel selection.

        ``differentiable_mask``: select each pixel's coefficients with the one-hot mask (the guide gets the
        paper's softmax gradient through ``argmax_onehot``) instead of an index gather (inference).
        """
        o, r, m = self.out_channels, self.rank, self.region_num
        weight = torch.cat([self.region_weight, self.weight])
        z = F.conv2d(x, weight, None, self.stride, self.padding, self.dilation)
        b, _, h, w = z.shape
        z = z.reshape(b, r + m + o, h * w)
        proj, guide, base = z.narrow(1, 0, r), z.narrow(1, r, m), z.narrow(1, r + m, o)
        guide = guide + self.guide_bias.unsqueeze(1)
        coeffs = self._coefficients(self._pool(x))  # (B, r, m)
        mask = region_index(guide.detach())  # (B, P)
        if differentiable_mask:
            # (B, r, P): the coefficients of each pixel's region
            selected = torch.bmm(coeffs, argmax_onehot(guide))
        else:
            selected = torch.gather(coeffs, 2, mask.unsqueeze(1).expand(b, r, h * w))
        y = torch.baddbmm(base, self.basis_out.unsqueeze(0).expand(b, o, r), selected * proj)
        return y.view(b, o, h, w), mask.view(b, h, w)

    def _forward(self, x: torch.Tensor, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_input(x)
        if self._pointwise:
            y, mask = self._forward_pointwise(x, training)
        else:
            y, mask = self._forward_general(x, training)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y, mask

    def forward_standard_ops(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference from standard ONNX ops only (what export traces): x (B, C, H, W) -> y (B, O, H', W'),
        mask (B, H', W') int64; the same function as ``forward_inference`` (first region on ties, like it).
        """
        self._check_input(x)
        o, r, m = self.out_channels, self.rank, self.region_num
        # batch dims are written as -1, never read from a shape: the exporter may freeze a read shape
        if self._pointwise:
            h, w = x.shape[2:]
            xv = x.flatten(2)  # (B, C, P)
            region = torch.matmul(self.region_weight.flatten(1), xv)  # (B, r + m, P): [V; guide] x
            base = torch.matmul(self.weight.flatten(1), xv)  # (B, O, P): W0 x
        else:
            weight = torch.cat([self.region_weight, self.weight])
            z = F.conv2d(x, weight, None, self.stride, self.padding, self.dilation)
            h, w = z.shape[2:]
            z = z.flatten(2)
            region, base = z[:, : r + m], z[:, r + m :]
        proj = region[:, :r]
        guide = region[:, r:] + self.guide_bias.unsqueeze(1)
        mask = torch.argmax(guide, dim=1)  # (B, P)
        pooled = self._pool(x)  # (B, C) or (B, k*k, C)
        hidden = torch.sigmoid(F.linear(pooled, self.gen_reduce_weight, self.gen_reduce_bias))
        if hidden.dim() == 3:
            hidden = hidden.transpose(1, 2).flatten(1)  # (B, g*k*k), g-major like the conv weight
        expanded = F.linear(hidden, self.gen_expand_weight.flatten(1), self.gen_expand_bias)
        coeffs = expanded.reshape(-1, m, r).transpose(1, 2)  # (B, r, m)
        selected = torch.gather(coeffs, 2, mask.unsqueeze(1).expand(-1, r, -1))  # (B, r, P)
        y = base + torch.matmul(self.basis_out, selected * proj)
        if self.bias is not None:
            y = y + self.bias.view(1, o, 1)
        return y.reshape(-1, o, h, w), mask.reshape(-1, h, w)

    def forward_inference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Chosen filter only: x (B, C, H, W) -> y (B, O, H', W'), mask (B, H', W')."""
        return self._forward(x, training=False)

    def forward_training(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Same output as ``forward_inference``, recorded for autograd with the paper's guide gradient."""
        return self._forward(x, training=True)

    def forward(
        self, x: torch.Tensor, return_mask: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) -> y (B, O, H', W'), or (y, mask (B, H', W') int64 in [0, m)) if ``return_mask``."""
        if torch.onnx.is_in_onnx_export():
            y, mask = self.forward_standard_ops(x)
            return (y, mask) if return_mask else y
        recording = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        )
        y, mask = self._forward(x, training=recording)
        return (y, mask) if return_mask else y

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"region_num={self.region_num}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, bias={self.bias is not None}, rank={self.rank}, "
            f"generator_channels={self.generator_channels}"
        )
