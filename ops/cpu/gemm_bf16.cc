// The bf16 micro-kernel (see gemm_bf16.h). Compiled for AVX512_BF16 by a function attribute, so
// the rest of the binary still runs on CPUs without it; gemm.cc calls it only when
// cpu_has_bf16_dot() says so.
#include "ops/cpu/gemm_bf16.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SMELT_HAVE_BF16_KERNEL 1
#endif

#include "runtime/error.h"

namespace smelt {

#ifdef SMELT_HAVE_BF16_KERNEL

bool cpu_has_bf16_dot() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
  return has;
}

__attribute__((target("avx512f,avx512bf16"))) void bf16_micro_kernel_12x32(int64_t pairs, const uint32_t* pa, const uint32_t* pb,
                                                                              float* c, int64_t ldc, int64_t rows, int64_t cols,
                                                                              float alpha, bool overwrite) {
  constexpr int kRows = static_cast<int>(kBf16MicroRows);
  __m512 acc[kRows][2];
#pragma GCC unroll 12
  for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  // C is read back only after the whole K block: ask for its lines now so the miss overlaps.
  for (int64_t r = 0; r < rows; ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + cols - 1), _MM_HINT_T0);
  }
#pragma GCC unroll 4
  for (int64_t p = 0; p < pairs; ++p, pa += kRows, pb += kBf16MicroCols) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(pb);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(pb + 16);
#pragma GCC unroll 12
    for (int r = 0; r < kRows; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(pa[r]));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, b1);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha);
  if (rows == kRows && cols == kBf16MicroCols) {
#pragma GCC unroll 12
    for (int r = 0; r < kRows; ++r) {
      float* row = c + r * ldc;
      __m512 lo = _mm512_mul_ps(va, acc[r][0]), hi = _mm512_mul_ps(va, acc[r][1]);
      if (!overwrite) {
        lo = _mm512_add_ps(lo, _mm512_loadu_ps(row));
        hi = _mm512_add_ps(hi, _mm512_loadu_ps(row + 16));
      }
      _mm512_storeu_ps(row, lo);
      _mm512_storeu_ps(row + 16, hi);
    }
    return;
  }
  // Edge tile: spill the accumulators, then add only the valid part.
  alignas(64) float tile[kRows * kBf16MicroCols];
#pragma GCC unroll 12
  for (int r = 0; r < kRows; ++r) {
    _mm512_store_ps(tile + r * kBf16MicroCols, acc[r][0]);
    _mm512_store_ps(tile + r * kBf16MicroCols + 16, acc[r][1]);
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j)
      c[r * ldc + j] = alpha * tile[r * kBf16MicroCols + j] + (overwrite ? 0.0f : c[r * ldc + j]);
}

#else

bool cpu_has_bf16_dot() { return false; }

void bf16_micro_kernel_12x32(int64_t, const uint32_t*, const uint32_t*, float*, int64_t, int64_t, int64_t, float, bool) {
  SMELT_FAIL("gemm: the bf16 micro-kernel was not built for this CPU architecture");
}

#endif

}  // namespace smelt
