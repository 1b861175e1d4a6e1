// The CPU's reductions: one axis of a contiguous [outer, n, inner] view at a time.
#include "ops/common.h"
#include "ops/cpu/cpu_ops.h"
#include "runtime/thread_pool.h"

namespace smelt {

void cpu_sum_axis_op(const Tensor& x, int64_t dim, const Tensor& out) {
  const ops::AxisView v = ops::axis_view(x.shape(), dim);  // named fields: lambdas may not capture structured bindings in clang 14
  const int64_t outer = v.outer, n = v.n, inner = v.inner;
  const float* px = static_cast<const float*>(x.device_data());
  float* po = static_cast<float*>(out.device_data());
  parallel_for(0, outer, 1, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      const float* base = px + o * n * inner;
      float* dst = po + o * inner;
      if (inner == 1) {
        double acc = 0;  // rows can be long (a whole vocabulary): accumulate in double
        for (int64_t i = 0; i < n; ++i) acc += base[i];
        *dst = static_cast<float>(acc);
      } else {
        for (int64_t c = 0; c < inner; ++c) dst[c] = 0.0f;
        for (int64_t i = 0; i < n; ++i) cpu_axpy(1.0f, base + i * inner, dst, inner);
      }
    }
  });
}

}  // namespace smelt

namespace smelt {

void cpu_max_axis_op(const Tensor& x, int64_t dim, const Tensor& out, const Tensor& argmax) {
  const ops::AxisView v = ops::axis_view(x.shape(), dim);
  const int64_t outer = v.outer, n = v.n, inner = v.inner;
  const float* px = static_cast<const float*>(x.device_data());
  float* po = static_cast<float*>(out.device_data());
  int64_t* pa = static_cast<int64_t*>(argmax.device_data());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < inner; ++j) {
      float best = px[o * n * inner + j];
      int64_t at = 0;
      for (int64_t i = 1; i < n; ++i) {
        const float v = px[(o * n + i) * inner + j];
        if (v > best) {  // the first maximum wins ties
          best = v;
          at = i;
        }
      }
      po[o * inner + j] = best;
      pa[o * inner + j] = at;
    }
}

}  // namespace smelt
