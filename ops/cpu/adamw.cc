// The AdamW update as one vectorised pass over a parameter's values, first moments, second
// moments and gradient: it is memory-bound only once the square root and the division run at
// full vector width (the plain loop, compiled for the baseline x86-64 ISA, ran them four wide).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/cpu/adamw.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#include <cmath>

#include "ops/cpu/cpu_kernels.h"

HWY_BEFORE_NAMESPACE();
namespace smelt {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void AdamWKernel(float* p, const float* g, float* m, float* v, int64_t n, const AdamWStep& s) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto decay = hn::Set(d, s.decay), b1 = hn::Set(d, s.beta1), b2 = hn::Set(d, s.beta2);
  const auto one_minus_b1 = hn::Set(d, 1.0f - s.beta1), one_minus_b2 = hn::Set(d, 1.0f - s.beta2);
  const auto step = hn::Set(d, s.step_size), scale = hn::Set(d, s.inv_sqrt_bc2), eps = hn::Set(d, s.eps);
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto gi = hn::LoadU(d, g + i);
    const auto mi = hn::MulAdd(b1, hn::LoadU(d, m + i), hn::Mul(one_minus_b1, gi));
    const auto vi = hn::MulAdd(b2, hn::LoadU(d, v + i), hn::Mul(hn::Mul(one_minus_b2, gi), gi));
    const auto denom = hn::MulAdd(hn::Sqrt(vi), scale, eps);
    hn::StoreU(mi, d, m + i);
    hn::StoreU(vi, d, v + i);
    hn::StoreU(hn::NegMulAdd(step, hn::Div(mi, denom), hn::Mul(hn::LoadU(d, p + i), decay)), d, p + i);
  }
  for (; i < n; ++i) {
    m[i] = s.beta1 * m[i] + (1.0f - s.beta1) * g[i];
    v[i] = s.beta2 * v[i] + (1.0f - s.beta2) * g[i] * g[i];
    p[i] = p[i] * s.decay - s.step_size * m[i] / (std::sqrt(v[i]) * s.inv_sqrt_bc2 + s.eps);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace smelt
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace smelt {
HWY_EXPORT(AdamWKernel);
void cpu_adamw(float* p, const float* g, float* m, float* v, int64_t n, const AdamWStep& step) {
  HWY_DYNAMIC_DISPATCH(AdamWKernel)(p, g, m, v, n, step);
}
}  // namespace smelt
#endif
