// Fused inference of a 1x1 DRConv on CPU (float32): torch.ops.drface.pointwise_infer.
//
// Per sample: one matrix product z = [W0; V; guide] x gives the base response (O rows), the rank projection V x
// (R rows) and the guide (M rows); one pass over the pixels takes the guide's argmax and scales V x by the chosen
// region's coefficients; U times that is accumulated onto the base rows in place. The output is a view of z's
// first O rows. Same result as model/drconv.py's PyTorch path (tested against it and the reference).
#include <torch/library.h>
#include <ATen/ATen.h>

#include <tuple>
#include <vector>

namespace {

std::tuple<at::Tensor, at::Tensor> pointwise_infer(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& region_weight, const at::Tensor& guide_bias,
    const at::Tensor& basis_out, const at::Tensor& reduce_weight, const at::Tensor& reduce_bias,
    const at::Tensor& expand_weight, const at::Tensor& expand_bias) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat, "pointwise_infer: x must be (B, C, H, W) float32");
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), P = H * W;
  const int64_t O = basis_out.size(0), R = basis_out.size(1), M = guide_bias.size(0);
  const auto xv = x.contiguous().view({B, C, P});
  const auto stacked = at::cat({weight.reshape({O, C}), region_weight.reshape({R + M, C})}).contiguous();
  // generator: mean pool -> 1x1 conv -> sigmoid -> 1x1 conv; coefficients (B, M, R), region-major
  const auto hidden = at::sigmoid(at::addmm(reduce_bias, xv.mean(2), reduce_weight.t()));
  const auto coeffs = at::addmm(expand_bias, hidden, expand_weight.reshape({M * R, -1}).t()).contiguous();
  const auto bias = guide_bias.contiguous();
  const auto u = basis_out.contiguous();
  auto z = at::empty({B, O + R + M, P}, x.options());
  auto mask = at::empty({B, P}, x.options().dtype(at::kLong));
  std::vector<float> best(P);
  for (int64_t b = 0; b < B; ++b) {
    auto zb = z[b];
    at::mm_out(zb, stacked, xv[b]);
    float* proj = zb.data_ptr<float>() + O * P;
    const float* guide = proj + R * P;
    const float* gb = bias.data_ptr<float>();
    const float* cb = coeffs.data_ptr<float>() + b * M * R;
    int64_t* mk = mask.data_ptr<int64_t>() + b * P;
    // argmax over regions, region-outer so the pixel loop vectorises; first maximum wins, like torch.max
    for (int64_t p = 0; p < P; ++p) {
      best[p] = guide[p] + gb[0];
      mk[p] = 0;
    }
    for (int64_t j = 1; j < M; ++j) {
      const float* gj = guide + j * P;
      for (int64_t p = 0; p < P; ++p) {
        const float v = gj[p] + gb[j];
        const bool greater = v > best[p];
        best[p] = greater ? v : best[p];
        mk[p] = greater ? j : mk[p];
      }
    }
    for (int64_t t = 0; t < R; ++t) {
      float* q = proj + t * P;
      for (int64_t p = 0; p < P; ++p) q[p] *= cb[mk[p] * R + t];
    }
    zb.narrow(0, 0, O).addmm_(u, zb.narrow(0, O, R));
  }
  return {z.narrow(1, 0, O).view({B, O, H, W}), mask.view({B, H, W})};
}

}  // namespace

TORCH_LIBRARY(drface, m) {
  m.def(
      "pointwise_infer(Tensor x, Tensor weight, Tensor region_weight, Tensor guide_bias, Tensor basis_out, "
      "Tensor reduce_weight, Tensor reduce_bias, Tensor expand_weight, Tensor expand_bias) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(drface, CPU, m) { m.impl("pointwise_infer", &pointwise_infer); }
