// The CPU's batched matmul: one GEMM in all when b is a shared 2-D matrix and a's rows are
// contiguous, otherwise one GEMM per batch entry with batch offsets following each operand's
// strides. Operands are read in place in either GEMM layout (ops/common.h's matrix_layout).
#include <algorithm>

#include "ops/common.h"
#include "ops/cpu/cpu_ops.h"
#include "ops/cpu/gemm_dot.h"
#include "ops/precision.h"

namespace smelt {

void point_gemm_b(GemmArgs& g, const Tensor& w, int64_t offset, bool trans_b) {
  g.trans_b = trans_b;
  if (matmuls_in_bf16()) g.bf16_math = true;  // training's "precision": "bf16"
  if (w.dtype() == DType::BF16) {
    // A bf16 weight's forward computes in bf16 too (VDPBF16PS on AVX512_BF16, twice the f32
    // rate; the same numbers through the f32 kernel elsewhere). Decoding's dot path stays f32
    // regardless: it is bound by the weights' bytes, not by arithmetic.
    g.b_bf16 = static_cast<const uint16_t*>(w.device_data()) + offset;
    if (trans_b) g.bf16_math = true;
  } else if (is_quantized(w.dtype())) {
    g.b_quant = static_cast<const uint8_t*>(w.device_data()) + dtype_bytes(w.dtype(), offset);
    g.b_quant_type = w.dtype();
  } else {
    g.b = static_cast<const float*>(w.device_data()) + offset;
  }
}

void cpu_matmul_op(const Tensor& a, const Tensor& b, const Tensor& out) {
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  const ops::MatrixLayout la = ops::matrix_layout(a), lb = ops::matrix_layout(b);
  const Shape batch(a.shape().begin(), a.shape().end() - 2);
  const float* pa = static_cast<const float*>(a.device_data());
  float* po = static_cast<float*>(out.device_data());
  const int64_t batch_count = shape_numel(batch);
  // Shared 2-D b and a contiguous batch of row-major matrices: one tall GEMM.
  if (b.dim() == 2 && !la.trans && a.is_contiguous()) {
    GemmArgs g;
    g.m = batch_count * M; g.n = N; g.k = K;
    g.a = pa; g.lda = K;
    point_gemm_b(g, b, 0, lb.trans);
    g.ldb = lb.ld;
    g.c = po; g.ldc = N;
    cpu_gemm(g);
    return;
  }
  ops::for_each_matmul_batch(a, b, out, [&](int64_t oa, int64_t ob, int64_t oo) {
    GemmArgs g;
    g.m = M; g.n = N; g.k = K;
    g.a = pa + oa; g.lda = la.ld; g.trans_a = la.trans;
    point_gemm_b(g, b, ob, lb.trans);
    g.ldb = lb.ld;
    g.c = po + oo; g.ldc = N;
    cpu_gemm(g);
  });
}

// One grouped GEMM for several weights against the same rows: decoding's products then share one
// parallel region (and the dot path's tasks balance across all of them).
void cpu_matmul_many_op(const Tensor& a, const std::vector<Tensor>& weights, const std::vector<Tensor>& outs) {
  std::vector<GemmArgs> products(weights.size());
  for (size_t i = 0; i < weights.size(); ++i) {
    GemmArgs& g = products[i];
    g.m = a.size(0); g.n = weights[i].size(0); g.k = a.size(1);
    g.a = static_cast<const float*>(a.device_data()); g.lda = g.k;
    point_gemm_b(g, weights[i], 0, true);
    g.ldb = g.k;
    g.c = static_cast<float*>(outs[i].device_data()); g.ldc = g.n;
  }
  if (a.size(0) <= kGemmDotRows || std::all_of(products.begin(), products.end(), gemm_takes_dot_path)) {
    cpu_grouped_gemm(products.data(), static_cast<int64_t>(products.size()));
    return;
  }
  for (const GemmArgs& g : products) cpu_gemm(g);  // many rows: each product fills the cores by itself
}

}  // namespace smelt
