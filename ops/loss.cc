#include "ops/loss.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/common.h"
#include "runtime/thread_pool.h"

namespace smelt::ops {
namespace {

// What every row counts for: its target and its weight (0 for ignored rows), and their sum.
struct RowTargets {
  std::vector<int64_t> target;
  std::vector<float> weight;
  double total_weight = 0;
};

RowTargets read_targets(const char* op, const Tensor& targets, const Tensor& weights, int64_t ignore_index, int64_t N,
                        int64_t V) {
  check_index(targets, op, "targets");
  SMELT_CHECK(targets.numel() == N, op, ": ", N, " rows but targets ", targets.str());
  if (weights.defined()) {
    check_f32(weights, op, "weights");
    SMELT_CHECK(weights.numel() == N, op, ": weights ", weights.str(), " for ", N, " rows");
  }
  Tensor tc = contiguous_data(targets);
  Tensor wc = weights.defined() ? contiguous_data(weights) : Tensor();
  RowTargets r;
  r.target.resize(N);
  r.weight.resize(N);
  for (int64_t i = 0; i < N; ++i) {
    const int64_t t = index_at(tc, i);
    const float w = t == ignore_index ? 0.0f : (wc.defined() ? wc.data<float>()[i] : 1.0f);
    SMELT_CHECK(t == ignore_index || (t >= 0 && t < V), op, ": target ", t, " at row ", i, " out of range [0, ", V, ")");
    SMELT_CHECK(w >= 0.0f, op, ": negative weight ", w, " at row ", i);
    r.target[i] = t;
    r.weight[i] = w;
    r.total_weight += w;
  }
  return r;
}

// log Σ_j exp(row[j]), stable, with softmax(row) written to `probs` (V floats) on the way: one
// vectorised kernel pass (a scalar exp over a 4096-token vocabulary cost more than the LM
// head's GEMM).
float row_log_sum_exp(const KernelTable& K, const float* row, int64_t V, float* probs) {
  float lse = 0.0f;
  K.softmax(row, probs, 1, V, false, &lse);
  return lse;
}

// d = scale · (softmax(row) − onehot(target)), given the row's log-sum-exp; d may be row itself.
void row_softmax_grad(const KernelTable& K, const float* row, float lse, float scale, int64_t target, float* d, int64_t V) {
  if (scale == 0.0f) {
    std::fill(d, d + V, 0.0f);
    return;
  }
  K.binary_scalar(BinaryOp::Sub, row, lse, d, V);
  K.unary(UnaryOp::Exp, d, d, V, 0.0f);
  K.binary_scalar(BinaryOp::Mul, d, scale, d, V);
  d[target] -= scale;
}

float mean_loss(const std::vector<double>& row_loss, double total_weight) {
  double loss = 0;
  for (double r : row_loss) loss += r;
  return total_weight > 0 ? static_cast<float>(loss / total_weight) : 0.0f;
}

// `t` times the scalar g: in place when nothing else holds t (it is the node's own buffer).
Tensor scaled_by(Tensor t, float g) {
  if (!t.defined() || g == 1.0f) return t;
  Tensor out = t.is_sole_reference() ? t : Tensor::empty(t.shape());
  kernels_for(t.device()).binary_scalar(BinaryOp::Mul, t.data<float>(), g, out.data<float>(), t.numel());
  return out;
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const Tensor& weights) {
  check_f32(logits, "cross_entropy", "logits");
  const int64_t V = logits.size(-1), N = logits.numel() / std::max<int64_t>(V, 1);
  auto rows = std::make_shared<RowTargets>(read_targets("cross_entropy", targets, weights, ignore_index, N, V));
  Tensor lc = contiguous_data(logits);
  auto lse = std::make_shared<std::vector<float>>(N);  // log-sum-exp per row, for backward
  std::vector<double> row_loss(N, 0.0);
  const float* pl = lc.data<float>();
  const KernelTable& K = kernels_for(logits.device());
  parallel_for(0, N, 4, [&](int64_t lo, int64_t hi) {
    std::vector<float> scratch(static_cast<size_t>(V));
    for (int64_t i = lo; i < hi; ++i) {
      (*lse)[i] = row_log_sum_exp(K, pl + i * V, V, scratch.data());
      if (rows->weight[i] > 0) row_loss[i] = rows->weight[i] * ((*lse)[i] - pl[i * V + rows->target[i]]);
    }
  });
  Tensor out = Tensor::scalar(mean_loss(row_loss, rows->total_weight));
  if (!needs_grad({&logits})) return out;
  SavedTensor L(lc, "cross_entropy");
  Shape ls = logits.shape();
  attach_grad_fn(out, "cross_entropy", {logits}, [=](const Tensor& g) {
    // d loss / d logits[i, j] = g · w_i / Σw · (softmax_ij − [j = t_i]). When nothing else holds
    // the logits (the usual training step), their gradient overwrites them: the largest
    // activation of a step is not allocated a second time.
    const bool in_place = L.get().is_sole_reference();
    Tensor lv = L.get();
    Tensor dl = in_place ? lv : Tensor::empty(ls);
    const float* p = lv.data<float>();
    float* pd = dl.data<float>();
    const float scale = rows->total_weight > 0 ? g.item() / static_cast<float>(rows->total_weight) : 0.0f;
    const KernelTable& K = kernels_for(lv.device());
    parallel_for(0, N, 4, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i)
        row_softmax_grad(K, p + i * V, (*lse)[i], rows->weight[i] * scale, rows->target[i], pd + i * V, V);
    });
    return std::vector<Tensor>{dl};
  });
  return out;
}

Tensor linear_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets, int64_t ignore_index,
                            const Tensor& weights, int64_t chunk_rows) {
  check_f32(hidden, "linear_cross_entropy", "hidden");
  check_weight(weight, "linear_cross_entropy", "weight");
  check_same_device(hidden, weight, "linear_cross_entropy");
  SMELT_CHECK(weight.dim() == 2 && hidden.dim() >= 1 && hidden.size(-1) == weight.size(1), "linear_cross_entropy: hidden ",
              hidden.str(), " does not match the weight ", weight.str(), " ([vocab, hidden])");
  const int64_t V = weight.size(0), C = weight.size(1), N = hidden.numel() / std::max<int64_t>(C, 1);
  const RowTargets rows = read_targets("linear_cross_entropy", targets, weights, ignore_index, N, V);
  // Rows per chunk: its logits ([R, V], 8 MiB by default) are the only vocabulary-wide buffer.
  const int64_t R = std::clamp<int64_t>(chunk_rows > 0 ? chunk_rows : (int64_t{2} << 20) / std::max<int64_t>(V, 1), 1, std::max<int64_t>(N, 1));
  const bool grad = needs_grad({&hidden, &weight}), need_h = grad && hidden.requires_grad(), need_w = grad && weight.requires_grad();
  Tensor h = contiguous_data(hidden), w = contiguous_data(weight);
  Tensor logits = Tensor::empty({R, V});
  // With grad on, each chunk's gradient is taken here while its logits exist (for an upstream
  // gradient of 1; backward scales): d hidden [N, C] and d weight [V, C] are all that is kept.
  Tensor d_hidden = need_h ? Tensor::empty(hidden.shape()) : Tensor();
  Tensor d_weight = need_w ? Tensor::zeros({V, C}) : Tensor();  // not for a frozen or bf16 head
  const float scale = rows.total_weight > 0 ? static_cast<float>(1.0 / rows.total_weight) : 0.0f;
  const KernelTable& K = kernels_for(hidden.device());
  std::vector<double> row_loss(N, 0.0);
  for (int64_t r0 = 0; r0 < N; r0 += R) {
    const int64_t n = std::min(R, N - r0);
    const float* hc = h.data<float>() + r0 * C;
    float* pl = logits.data<float>();
    GemmArgs z;  // logits = h_c · Wᵀ
    z.m = n; z.n = V; z.k = C;
    z.a = hc; z.lda = C;
    set_gemm_b(z, w);
    z.ldb = C; z.trans_b = true;
    z.c = pl; z.ldc = V;
    K.gemm(z);
    parallel_for(0, n, 4, [&](int64_t lo, int64_t hi) {
      std::vector<float> scratch(static_cast<size_t>(V));
      for (int64_t i = lo; i < hi; ++i) {
        const int64_t row = r0 + i;
        float* li = pl + i * V;
        const float lse = row_log_sum_exp(K, li, V, scratch.data());
        const int64_t target = rows.target[row];
        if (rows.weight[row] > 0) row_loss[row] = rows.weight[row] * (lse - li[target]);
        if (!grad) continue;
        // d logits = scale · (softmax − onehot(target)), from the probabilities just computed.
        const float s = rows.weight[row] * scale;
        if (s == 0.0f) {  // an ignored row: exact zeros, whatever its logits hold
          std::fill(li, li + V, 0.0f);
          continue;
        }
        K.binary_scalar(BinaryOp::Mul, scratch.data(), s, li, V);
        li[target] -= s;
      }
    });
    if (need_h) {
      GemmArgs dh;  // d hidden_c = d logits_c · W
      dh.m = n; dh.n = C; dh.k = V;
      dh.a = pl; dh.lda = V;
      set_gemm_b(dh, w);
      dh.ldb = C;
      dh.c = d_hidden.data<float>() + r0 * C; dh.ldc = C;
      K.gemm(dh);
    }
    if (need_w) {
      GemmArgs dw;  // d W += d logits_cᵀ · h_c
      dw.m = V; dw.n = C; dw.k = n;
      dw.a = pl; dw.lda = V; dw.trans_a = true;
      dw.b = hc; dw.ldb = C;
      dw.c = d_weight.data<float>(); dw.ldc = C;
      dw.beta = 1.0f;
      K.gemm(dw);
    }
  }
  Tensor out = Tensor::scalar(mean_loss(row_loss, rows.total_weight));
  if (!grad) return out;
  attach_grad_fn(out, "linear_cross_entropy", {hidden, weight}, [=](const Tensor& g) mutable {
    const float gv = g.item();
    return std::vector<Tensor>{scaled_by(std::move(d_hidden), gv), scaled_by(std::move(d_weight), gv)};
  });
  return out;
}

}  // namespace smelt::ops
