// The CPU's cross-entropy losses. Rows run in parallel; each row's log-sum-exp comes from the
// softmax kernel (a scalar exp over a 4096-token vocabulary cost more than the LM head's GEMM).
// The linear cross-entropy runs the LM head in chunks of rows, so the [N, V] logits never exist.
#include <algorithm>
#include <vector>

#include "ops/cpu/cpu_ops.h"
#include "ops/precision.h"
#include "runtime/thread_pool.h"

namespace smelt {
namespace {

// What every row counts for: its target and its weight (0 for ignored rows), and their sum.
// Targets and weights are checked here, as they are read.
struct RowTargets {
  std::vector<int64_t> target;
  std::vector<float> weight;
  double total_weight = 0;
};

RowTargets read_targets(const char* op, const Tensor& targets, const Tensor& weights, int64_t ignore_index, int64_t V) {
  const int64_t N = targets.numel();
  RowTargets r;
  r.target.resize(N);
  r.weight.resize(N);
  const float* pw = weights.defined() ? static_cast<const float*>(weights.device_data()) : nullptr;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t t = targets.dtype() == DType::I64 ? static_cast<const int64_t*>(targets.device_data())[i]
                                                    : static_cast<const int32_t*>(targets.device_data())[i];
    const float w = t == ignore_index ? 0.0f : (pw ? pw[i] : 1.0f);
    SMELT_CHECK(t == ignore_index || (t >= 0 && t < V), op, ": target ", t, " at row ", i, " out of range [0, ", V, ")");
    SMELT_CHECK(w >= 0.0f, op, ": negative weight ", w, " at row ", i);
    r.target[i] = t;
    r.weight[i] = w;
    r.total_weight += w;
  }
  return r;
}

// log Σ_j exp(row[j]), stable, with softmax(row) written to `probs` (V floats) on the way.
float row_log_sum_exp(const float* row, int64_t V, float* probs) {
  float lse = 0.0f;
  cpu_softmax(row, probs, 1, V, false, &lse);
  return lse;
}

float mean_loss(const std::vector<double>& row_loss, double total_weight) {
  double loss = 0;
  for (double r : row_loss) loss += r;
  return total_weight > 0 ? static_cast<float>(loss / total_weight) : 0.0f;
}

float* f32_out(const Tensor& t) { return t.defined() ? static_cast<float*>(t.device_data()) : nullptr; }

GemmArgs b_from(const Tensor& w, bool trans_b) {
  GemmArgs g;
  point_gemm_b(g, w, 0, trans_b);
  return g;
}

}  // namespace

void cpu_cross_entropy_op(const Tensor& logits, const Tensor& targets, const Tensor& weights, int64_t ignore_index, const Tensor& loss,
                          const Tensor& lse) {
  const int64_t V = logits.size(-1), N = targets.numel();
  const RowTargets rows = read_targets("cross_entropy", targets, weights, ignore_index, V);
  const float* pl = static_cast<const float*>(logits.device_data());
  float* plse = f32_out(lse);
  std::vector<double> row_loss(N, 0.0);
  parallel_for(0, N, 4, [&](int64_t lo, int64_t hi) {
    std::vector<float> scratch(static_cast<size_t>(V));
    for (int64_t i = lo; i < hi; ++i) {
      plse[i] = row_log_sum_exp(pl + i * V, V, scratch.data());
      if (rows.weight[i] > 0) row_loss[i] = rows.weight[i] * (plse[i] - pl[i * V + rows.target[i]]);
    }
  });
  *f32_out(loss) = mean_loss(row_loss, rows.total_weight);
}

void cpu_cross_entropy_backward_op(const Tensor& logits, const Tensor& targets, const Tensor& weights, int64_t ignore_index,
                                   const Tensor& lse, const Tensor& g, const Tensor& dlogits) {
  // d loss / d logits[i, j] = g · w_i / Σw · (softmax_ij − [j = t_i]); dlogits may be logits itself.
  const int64_t V = logits.size(-1), N = targets.numel();
  const RowTargets rows = read_targets("cross_entropy", targets, weights, ignore_index, V);
  const float* p = static_cast<const float*>(logits.device_data());
  const float* plse = static_cast<const float*>(lse.device_data());
  float* pd = f32_out(dlogits);
  const float scale = rows.total_weight > 0 ? *static_cast<const float*>(g.device_data()) / static_cast<float>(rows.total_weight) : 0.0f;
  parallel_for(0, N, 4, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const float s = rows.weight[i] * scale;
      float* d = pd + i * V;
      if (s == 0.0f) {
        std::fill(d, d + V, 0.0f);
        continue;
      }
      cpu_binary_scalar(BinaryOp::Sub, p + i * V, plse[i], d, V);
      cpu_unary(UnaryOp::Exp, d, d, V, 0.0f);
      cpu_binary_scalar(BinaryOp::Mul, d, s, d, V);
      d[rows.target[i]] -= s;
    }
  });
}

void cpu_linear_cross_entropy_op(const Tensor& hidden, const Tensor& weight, const Tensor& targets, const Tensor& weights,
                                 int64_t ignore_index, int64_t chunk_rows, const Tensor& loss, const Tensor& d_hidden,
                                 const Tensor& d_weight) {
  const int64_t V = weight.size(0), C = weight.size(1), N = targets.numel();
  const RowTargets rows = read_targets("linear_cross_entropy", targets, weights, ignore_index, V);
  // Rows per chunk: its logits ([R, V], 8 MiB by default) are the only vocabulary-wide buffer.
  const int64_t R = std::clamp<int64_t>(chunk_rows > 0 ? chunk_rows : (int64_t{2} << 20) / std::max<int64_t>(V, 1), 1, std::max<int64_t>(N, 1));
  const bool grad = d_hidden.defined() || d_weight.defined();
  const Tensor logits = Tensor::empty({R, V});
  // With grad on, each chunk's gradient is taken here while its logits exist (for an upstream
  // gradient of 1; the op's backward scales): d hidden [N, C] and d weight [V, C] are all that is kept.
  if (d_weight.defined()) std::fill(f32_out(d_weight), f32_out(d_weight) + V * C, 0.0f);
  const float scale = rows.total_weight > 0 ? static_cast<float>(1.0 / rows.total_weight) : 0.0f;
  const float* h = static_cast<const float*>(hidden.device_data());
  std::vector<double> row_loss(N, 0.0);
  for (int64_t r0 = 0; r0 < N; r0 += R) {
    const int64_t n = std::min(R, N - r0);
    const float* hc = h + r0 * C;
    float* pl = f32_out(logits);
    GemmArgs z = b_from(weight, true);  // logits = h_c · Wᵀ
    z.m = n; z.n = V; z.k = C;
    z.a = hc; z.lda = C;
    z.ldb = C;
    z.c = pl; z.ldc = V;
    cpu_gemm(z);
    parallel_for(0, n, 4, [&](int64_t lo, int64_t hi) {
      std::vector<float> scratch(static_cast<size_t>(V));
      for (int64_t i = lo; i < hi; ++i) {
        const int64_t row = r0 + i;
        float* li = pl + i * V;
        const float lse = row_log_sum_exp(li, V, scratch.data());
        const int64_t target = rows.target[row];
        if (rows.weight[row] > 0) row_loss[row] = rows.weight[row] * (lse - li[target]);
        if (!grad) continue;
        // d logits = scale · (softmax − onehot(target)), from the probabilities just computed.
        const float s = rows.weight[row] * scale;
        if (s == 0.0f) {  // an ignored row: exact zeros, whatever its logits hold
          std::fill(li, li + V, 0.0f);
          continue;
        }
        cpu_binary_scalar(BinaryOp::Mul, scratch.data(), s, li, V);
        li[target] -= s;
      }
    });
    if (d_hidden.defined()) {
      GemmArgs dh = b_from(weight, false);  // d hidden_c = d logits_c · W
      dh.m = n; dh.n = C; dh.k = V;
      dh.a = pl; dh.lda = V;
      dh.ldb = C;
      dh.c = f32_out(d_hidden) + r0 * C; dh.ldc = C;
      cpu_gemm(dh);
    }
    if (d_weight.defined()) {
      GemmArgs dw;  // d W += d logits_cᵀ · h_c
      dw.m = V; dw.n = C; dw.k = n;
      dw.a = pl; dw.lda = V; dw.trans_a = true;
      dw.b = hc; dw.ldb = C;
      dw.c = f32_out(d_weight); dw.ldc = C;
      dw.beta = 1.0f;
      dw.bf16_math = matmuls_in_bf16();
      cpu_gemm(dw);
    }
  }
  *f32_out(loss) = mean_loss(row_loss, rows.total_weight);
}

}  // namespace smelt
