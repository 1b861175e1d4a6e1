// Row-wise CPU kernels: RMS norm forward (optionally of a residual sum) and softmax / log-softmax
// over the last dimension. Rows run in parallel; each row is a few vectorised passes over data
// that stays in L1 (norm: squares, then scale; softmax: max, exponentials, then normalise).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/cpu/rows.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/cpu/cpu_kernels.h"
#include "runtime/thread_pool.h"

HWY_BEFORE_NAMESPACE();
namespace smelt {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Σ v² over a row, v = x, or v = x + residual (then also written to `sum`: the residual-stream
// add fused into the norm, its row read back for the scaling while still in L1).
float sum_squares(const float* x, const float* residual, float* sum, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  auto acc = hn::Zero(d);
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    auto v = hn::LoadU(d, x + i);
    if (residual) {
      v = hn::Add(v, hn::LoadU(d, residual + i));
      hn::StoreU(v, d, sum + i);
    }
    acc = hn::MulAdd(v, v, acc);
  }
  float s = hn::GetLane(hn::SumOfLanes(d, acc));
  for (; i < n; ++i) {
    const float v = residual ? (sum[i] = x[i] + residual[i]) : x[i];
    s += v * v;
  }
  return s;
}

// out = v · rstd · w per row, v = x or (with `residual` set) x + residual, written to `sum`.
void RmsNormForwardKernel(const float* x, const float* residual, const float* w, float* sum, float* out, float* rstd, int64_t rows,
                          int64_t cols, float eps) {
  parallel_for(0, rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(cols, 1)), [&](int64_t r0, int64_t r1) {
    const hn::ScalableTag<float> d;
    const int64_t N = static_cast<int64_t>(hn::Lanes(d));
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * cols;
      float* yr = out + r * cols;
      float* sr = residual ? sum + r * cols : nullptr;
      const float squares = sum_squares(xr, residual ? residual + r * cols : nullptr, sr, cols);
      if (sr) xr = sr;
      const float s = 1.0f / std::sqrt(squares / static_cast<float>(cols) + eps);
      if (rstd) rstd[r] = s;
      const auto vs = hn::Set(d, s);
      int64_t i = 0;
      for (; i + N <= cols; i += N) hn::StoreU(hn::Mul(hn::Mul(hn::LoadU(d, xr + i), vs), hn::LoadU(d, w + i)), d, yr + i);
      for (; i < cols; ++i) yr[i] = xr[i] * s * w[i];
    }
  });
}

// Softmax (or log-softmax) of each row; with lse set, each row's log Σ exp is stored too (what
// attention keeps for backward and the loss needs), so callers need no second pass.
void SoftmaxKernel(const float* x, float* out, int64_t rows, int64_t cols, bool log, float* lse) {
  parallel_for(0, rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(cols, 1)), [&](int64_t r0, int64_t r1) {
    const hn::ScalableTag<float> d;
    const int64_t N = static_cast<int64_t>(hn::Lanes(d));
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * cols;
      float* yr = out + r * cols;
      auto vmax = hn::Set(d, kNegInf);
      int64_t i = 0;
      for (; i + N <= cols; i += N) vmax = hn::Max(vmax, hn::LoadU(d, xr + i));
      float mx = hn::GetLane(hn::MaxOfLanes(d, vmax));
      for (; i < cols; ++i) mx = std::max(mx, xr[i]);
      if (mx == kNegInf) {  // fully masked row: probabilities 0 (log: −∞), log Σ exp = −∞
        std::fill(yr, yr + cols, log ? kNegInf : 0.0f);
        if (lse) lse[r] = kNegInf;
        continue;
      }
      const auto vmx = hn::Set(d, mx);
      auto acc = hn::Zero(d);
      i = 0;
      for (; i + N <= cols; i += N) {
        auto e = hn::Exp(d, hn::Sub(hn::LoadU(d, xr + i), vmx));
        acc = hn::Add(acc, e);
        if (!log) hn::StoreU(e, d, yr + i);
      }
      float sum = hn::GetLane(hn::SumOfLanes(d, acc));
      for (; i < cols; ++i) {
        float e = std::exp(xr[i] - mx);
        sum += e;
        if (!log) yr[i] = e;
      }
      if (lse) lse[r] = mx + std::log(sum);
      if (log) {
        const float shift = mx + std::log(sum);
        const auto vshift = hn::Set(d, shift);
        int64_t j = 0;
        for (; j + N <= cols; j += N) hn::StoreU(hn::Sub(hn::LoadU(d, xr + j), vshift), d, yr + j);
        for (; j < cols; ++j) yr[j] = xr[j] - shift;
      } else {
        const float inv = 1.0f / sum;
        const auto vinv = hn::Set(d, inv);
        int64_t j = 0;
        for (; j + N <= cols; j += N) hn::StoreU(hn::Mul(hn::LoadU(d, yr + j), vinv), d, yr + j);
        for (; j < cols; ++j) yr[j] *= inv;
      }
    }
  });
}

}  // namespace HWY_NAMESPACE
}  // namespace smelt
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace smelt {
HWY_EXPORT(RmsNormForwardKernel);
HWY_EXPORT(SoftmaxKernel);
void cpu_rms_norm_forward(const float* x, const float* residual, const float* w, float* sum, float* out, float* rstd, int64_t rows,
                          int64_t cols, float eps) {
  HWY_DYNAMIC_DISPATCH(RmsNormForwardKernel)(x, residual, w, sum, out, rstd, rows, cols, eps);
}
void cpu_softmax(const float* x, float* out, int64_t rows, int64_t cols, bool log, float* lse) {
  HWY_DYNAMIC_DISPATCH(SoftmaxKernel)(x, out, rows, cols, log, lse);
}
}  // namespace smelt
#endif
