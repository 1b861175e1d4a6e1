// How the GEMM kernels read their operands, per Highway target: A and B rows through the
// optional row indices, and B's elements widened to f32 whether stored as f32 or bf16. Included
// by gemm.cc and gemm_dot.cc inside their foreach_target loop (the guard below is Highway's
// per-target include-guard idiom).
#if defined(SMELT_OPS_CPU_GEMM_OPERANDS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SMELT_OPS_CPU_GEMM_OPERANDS_INL_H_
#undef SMELT_OPS_CPU_GEMM_OPERANDS_INL_H_
#else
#define SMELT_OPS_CPU_GEMM_OPERANDS_INL_H_
#endif

#include <cstdint>

#include "hwy/highway.h"
#include "ops/cpu/cpu_kernels.h"
#include "runtime/dtype.h"

HWY_BEFORE_NAMESPACE();
namespace smelt {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

inline int64_t a_row(const GemmArgs& g, int64_t i) { return g.a_rows ? g.a_rows[i] : i; }
inline int64_t b_row(const GemmArgs& g, int64_t k) { return g.b_rows ? g.b_rows[k] : k; }

// B's elements as f32, whichever type they are stored in (f32, or bf16: the upper half of an f32).
inline float to_f32(float x) { return x; }
inline float to_f32(uint16_t x) { return bf16_to_f32(x); }
template <class D>
HWY_INLINE hn::Vec<D> load_f32(D d, const float* p) {
  return hn::LoadU(d, p);
}
template <class D>
HWY_INLINE hn::Vec<D> load_f32(D d, const uint16_t* p) {
  const hn::Rebind<uint16_t, D> d16;
  const hn::Rebind<uint32_t, D> d32;
  return hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(d32, hn::LoadU(d16, p))));
}

// The bits of p's floats rounded to bf16 (to nearest even; the bf16 is the upper half). A NaN
// stays a quiet NaN, as f32_to_bf16 keeps it: the rounding carry would turn some into infinity
// and wrap 0x7fffffff (the GPU's NaN) to −0.
template <class D>
HWY_INLINE hn::Vec<hn::RebindToUnsigned<D>> rounded_bf16_bits(D d, const float* p) {
  const hn::RebindToUnsigned<D> du;
  const auto v = hn::LoadU(d, p);
  const auto u = hn::BitCast(du, v);
  const auto rounded = hn::Add(u, hn::Add(hn::Set(du, 0x7fffu), hn::And(hn::ShiftRight<16>(u), hn::Set(du, 1u))));
  return hn::IfThenElse(hn::RebindMask(du, hn::IsNaN(v)), hn::Or(u, hn::Set(du, 0x00400000u)), rounded);
}

}  // namespace HWY_NAMESPACE
}  // namespace smelt
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
