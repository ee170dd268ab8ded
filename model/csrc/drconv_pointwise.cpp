// Fused inference of a 1x1 DRConv on CPU (float32): torch.ops.drface.pointwise_infer.
//
// Per sample and chunk of pixels: one matrix product z = [W0; V; guide] x gives the base response (O rows), the
// rank projection V x (R rows) and the guide (M rows); one pass over the pixels takes the guide's argmax, one per
// rank row scales V x by the chosen region's coefficients; U times that is accumulated onto the base rows in
// place. The output is a view of z's first O rows. The generator (mean pool, two small linear maps, sigmoid)
// runs as plain loops: at batch 1 ATen's per-call overhead would cost more than its arithmetic. Same result as
// model/drconv.py's PyTorch path (tested against it and the reference).
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

namespace {

constexpr int64_t kChunkPixels = 1024;

float dot(const float* __restrict__ a, const float* __restrict__ b, int64_t n) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// Mean of each of the C rows of x (C, P) into out (C). Four rows per pass: four independent accumulators
// keep the vector adds from waiting on each other.
void row_means(const float* __restrict__ x, int64_t C, int64_t P, float* __restrict__ out) {
  const float scale = 1.0f / static_cast<float>(P);
  int64_t c = 0;
  for (; c + 4 <= C; c += 4) {
    const float *r0 = x + c * P, *r1 = r0 + P, *r2 = r1 + P, *r3 = r2 + P;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t p = 0; p < P; ++p) {
      s0 += r0[p];
      s1 += r1[p];
      s2 += r2[p];
      s3 += r3[p];
    }
    out[c] = s0 * scale, out[c + 1] = s1 * scale, out[c + 2] = s2 * scale, out[c + 3] = s3 * scale;
  }
  for (; c < C; ++c) {
    const float* r = x + c * P;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t p = 0; p < P; ++p) sum += r[p];
    out[c] = sum * scale;
  }
}

// Generator of one sample: x (C, P) -> coeffs (M, R) = expand(sigmoid(reduce(mean_p x))).
void generator(const float* x, int64_t C, int64_t P, const float* reduce_w, const float* reduce_b, int64_t G,
               const float* expand_w, const float* expand_b, int64_t MR, float* pooled, float* hidden,
               float* coeffs) {
  row_means(x, C, P, pooled);
  for (int64_t g = 0; g < G; ++g) {
    hidden[g] = 1.0f / (1.0f + std::exp(-(reduce_b[g] + dot(reduce_w + g * C, pooled, C))));
  }
  for (int64_t k = 0; k < MR; ++k) coeffs[k] = expand_b[k] + dot(expand_w + k * G, hidden, G);
}

// Index of each pixel's largest guide channel (first maximum wins, like torch.max), region-outer so the pixel
// loop vectorises. guide: M rows of P pixels, `stride` floats apart, without the bias.
void region_argmax(const float* __restrict__ guide, int64_t stride, const float* bias, int64_t M, int64_t P,
                   float* __restrict__ best, int32_t* __restrict__ index) {
  for (int64_t p = 0; p < P; ++p) {
    best[p] = guide[p] + bias[0];
    index[p] = 0;
  }
  for (int64_t j = 1; j < M; ++j) {
    const float* __restrict__ gj = guide + j * stride;
    const float bj = bias[j];
    const int32_t jj = static_cast<int32_t>(j);
    for (int64_t p = 0; p < P; ++p) {
      const float v = gj[p] + bj;
      const bool greater = v > best[p];
      best[p] = greater ? v : best[p];
      index[p] = greater ? jj : index[p];
    }
  }
}

std::tuple<at::Tensor, at::Tensor> pointwise_infer(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& region_weight, const at::Tensor& guide_bias,
    const at::Tensor& basis_out, const at::Tensor& reduce_weight, const at::Tensor& reduce_bias,
    const at::Tensor& expand_weight, const at::Tensor& expand_bias) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat, "pointwise_infer: x must be (B, C, H, W) float32");
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), P = H * W;
  const int64_t O = basis_out.size(0), R = basis_out.size(1), M = guide_bias.size(0);
  const int64_t G = reduce_bias.size(0);
  for (const auto* t : {&weight, &region_weight, &guide_bias, &basis_out, &reduce_weight, &reduce_bias,
                        &expand_weight, &expand_bias}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat, "pointwise_infer: parameters must be float32");
  }
  const auto xv = x.contiguous().view({B, C, P});
  const auto stacked = at::cat({weight.reshape({O, C}), region_weight.reshape({R + M, C})});
  const auto bias = guide_bias.contiguous();
  const auto u = basis_out.contiguous();
  const auto rw = reduce_weight.contiguous(), rb = reduce_bias.contiguous();
  const auto ew = expand_weight.contiguous(), eb = expand_bias.contiguous();
  auto z = at::empty({B, O + R + M, P}, x.options());
  auto mask = at::empty({B, P}, x.options().dtype(at::kLong));
  // Pixel chunks of about kChunkPixels, evenly split, so that a chunk's rows of z stay in L2 cache from the
  // product to the rank update (28x28 maps are one chunk, 56x56 maps four).
  const int64_t chunks = std::max<int64_t>(1, (P + kChunkPixels - 1) / kChunkPixels);
  const int64_t chunk = (P + chunks - 1) / chunks;
  // Samples [first, last): the generator, then per pixel chunk the product, argmax, selection and rank update.
  const auto run = [&](int64_t first, int64_t last) {
    std::vector<float> pooled(C), hidden(G), coeffs(M * R), best(chunk), table(M);
    std::vector<int32_t> index(chunk);
    for (int64_t b = first; b < last; ++b) {
      const auto xb = xv[b];
      auto zb = z[b];
      generator(xb.data_ptr<float>(), C, P, rw.data_ptr<float>(), rb.data_ptr<float>(), G,
                ew.data_ptr<float>(), eb.data_ptr<float>(), M * R, pooled.data(), hidden.data(), coeffs.data());
      for (int64_t p0 = 0; p0 < P; p0 += chunk) {
        const int64_t n = std::min(chunk, P - p0);
        auto zc = zb.narrow(1, p0, n);
        at::mm_out(zc, stacked, xb.narrow(1, p0, n));
        float* proj = zb.data_ptr<float>() + O * P + p0;
        region_argmax(proj + R * P, P, bias.data_ptr<float>(), M, n, best.data(), index.data());
        const int32_t* __restrict__ idx = index.data();
        for (int64_t t = 0; t < R; ++t) {
          for (int64_t j = 0; j < M; ++j) table[j] = coeffs[j * R + t];  // region j's coefficient of row t
          const float* __restrict__ tab = table.data();
          float* __restrict__ q = proj + t * P;
          for (int64_t p = 0; p < n; ++p) q[p] *= tab[idx[p]];
        }
        int64_t* __restrict__ mk = mask.data_ptr<int64_t>() + b * P + p0;
        for (int64_t p = 0; p < n; ++p) mk[p] = idx[p];
        zc.narrow(0, 0, O).addmm_(u, zc.narrow(0, O, R));
      }
    }
  };
  // Several samples: one per intra-op thread at a time, each product single-threaded (less synchronisation than
  // threading every small product). One sample: inline, so its products may use the threads.
  // Worker threads take the caller's thread-local state (inference mode, grad mode) for the ATen calls.
  if (B > 1) {
    const at::ThreadLocalState caller_state;
    at::parallel_for(0, B, 1, [&](int64_t first, int64_t last) {
      const at::ThreadLocalStateGuard state_guard(caller_state);
      run(first, last);
    });
  } else {
    run(0, B);
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
