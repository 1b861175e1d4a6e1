// The CPU's reductions: one axis of a contiguous [outer, n, inner] view at a time.
#include "ops/cpu/cpu_ops.h"
#include "runtime/thread_pool.h"

namespace smelt {

void cpu_sum_axis_op(const Tensor& x, int64_t dim, const Tensor& out) {
  int64_t outer = 1, inner = 1;
  const Shape& s = x.shape();
  for (int64_t i = 0; i < dim; ++i) outer *= s[i];
  const int64_t n = s[dim];
  for (size_t i = dim + 1; i < s.size(); ++i) inner *= s[i];
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
