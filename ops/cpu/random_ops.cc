// The CPU's Philox fill: the host stream itself, at the given position.
#include "ops/cpu/cpu_ops.h"
#include "runtime/rng.h"

namespace smelt {

void cpu_random_fill_op(const Tensor& out, uint64_t seed, uint64_t offset, bool normal, float a, float b) {
  Philox rng(seed, offset);
  float* p = static_cast<float*>(out.device_data());
  const int64_t n = out.numel();
  if (normal) {
    rng.fill_normal(p, n);
    for (int64_t i = 0; i < n; ++i) p[i] = a + b * p[i];
  } else {
    rng.fill_uniform(p, n);
    for (int64_t i = 0; i < n; ++i) p[i] = a + (b - a) * p[i];
  }
}

}  // namespace smelt
