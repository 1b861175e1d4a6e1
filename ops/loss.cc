#include "ops/loss.h"

#include <cmath>
#include <limits>
#include <vector>

#include "ops/common.h"
#include "runtime/thread_pool.h"

namespace smelt::ops {

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const Tensor& weights) {
  check_f32(logits, "cross_entropy", "logits");
  check_index(targets, "cross_entropy", "targets");
  const int64_t V = logits.size(-1), N = logits.numel() / std::max<int64_t>(V, 1);
  SMELT_CHECK(targets.numel() == N, "cross_entropy: ", N, " rows of logits ", logits.str(), " but targets ", targets.str());
  if (weights.defined()) {
    check_f32(weights, "cross_entropy", "weights");
    SMELT_CHECK(weights.numel() == N, "cross_entropy: weights ", weights.str(), " for ", N, " rows");
  }
  Tensor lc = contiguous_data(logits), tc = contiguous_data(targets);
  Tensor wc = weights.defined() ? contiguous_data(weights) : Tensor();
  std::vector<int64_t> tgt(N);
  std::vector<float> w(N);
  double total_w = 0;
  for (int64_t i = 0; i < N; ++i) {
    tgt[i] = index_at(tc, i);
    w[i] = tgt[i] == ignore_index ? 0.0f : (wc.defined() ? wc.data<float>()[i] : 1.0f);
    SMELT_CHECK(tgt[i] == ignore_index || (tgt[i] >= 0 && tgt[i] < V), "cross_entropy: target ", tgt[i], " at row ", i,
                " out of range [0, ", V, ")");
    SMELT_CHECK(w[i] >= 0.0f, "cross_entropy: negative weight ", w[i], " at row ", i);
    total_w += w[i];
  }
  auto lse = std::make_shared<std::vector<float>>(N);  // log-sum-exp per row, for backward
  std::vector<double> row_loss(N, 0.0);
  const float* pl = lc.data<float>();
  const KernelTable& K = kernels_for(logits.device());
  // Rows run in parallel; within a row the exponentials are one vectorised kernel pass (a
  // scalar exp over a 4096-token vocabulary cost more than the LM head's GEMM).
  parallel_for(0, N, 4, [&](int64_t lo, int64_t hi) {
    std::vector<float> e(static_cast<size_t>(V));
    for (int64_t i = lo; i < hi; ++i) {
      const float* row = pl + i * V;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < V; ++j) mx = std::max(mx, row[j]);
      K.binary_scalar(BinaryOp::Sub, row, mx, e.data(), V);
      K.unary(UnaryOp::Exp, e.data(), e.data(), V, 0.0f);
      double s = 0;
      for (int64_t j = 0; j < V; ++j) s += e[j];
      (*lse)[i] = mx + static_cast<float>(std::log(s));
      if (w[i] > 0) row_loss[i] = w[i] * ((*lse)[i] - row[tgt[i]]);
    }
  });
  double loss = 0;
  for (double r : row_loss) loss += r;
  Tensor out = Tensor::scalar(total_w > 0 ? static_cast<float>(loss / total_w) : 0.0f);
  if (!needs_grad({&logits})) return out;
  SavedTensor L(lc, "cross_entropy");
  Shape ls = logits.shape();
  attach_grad_fn(out, "cross_entropy", {logits}, [=](const Tensor& g) {
    // d loss / d logits[i, j] = g · w_i / Σw · (softmax_ij − [j = t_i])
    Tensor lv = L.get();
    Tensor dl = Tensor::empty(ls);
    const float* p = lv.data<float>();
    float* pd = dl.data<float>();
    const float scale = total_w > 0 ? g.item() / static_cast<float>(total_w) : 0.0f;
    const KernelTable& K = kernels_for(lv.device());
    parallel_for(0, N, 4, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        float* drow = pd + i * V;
        const float ws = w[i] * scale;
        if (ws == 0.0f) {
          for (int64_t j = 0; j < V; ++j) drow[j] = 0.0f;
          continue;
        }
        const float* row = p + i * V;
        K.binary_scalar(BinaryOp::Sub, row, (*lse)[i], drow, V);
        K.unary(UnaryOp::Exp, drow, drow, V, 0.0f);
        K.binary_scalar(BinaryOp::Mul, drow, ws, drow, V);
        drow[tgt[i]] -= ws;
      }
    });
    return std::vector<Tensor>{dl};
  });
  return out;
}

}  // namespace smelt::ops
