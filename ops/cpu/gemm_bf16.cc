// The bf16 micro-kernel (see gemm_bf16.h). Compiled for AVX512_BF16 by a function attribute, so
// the rest of the binary still runs on CPUs without it; gemm.cc calls it only when
// cpu_has_bf16_dot() says so.
#include "ops/cpu/gemm_bf16.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SMELT_HAVE_BF16_KERNEL 1
#endif

#include <algorithm>

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

namespace {

// (Σ lanes of v[0], ..., Σ lanes of v[3]): pairs interleaved and added, pairs of pairs, then the
// four 128-bit blocks (gemm_dot_tile-inl.h's sum_lanes_of_4 in intrinsics).
__attribute__((target("avx512f"))) inline __m128 sum_lanes_of_4(const __m512 v[4]) {
  // The zero-masking forms with every lane kept: GCC 12 warns that the plain ones' undefined
  // pass-through operand is uninitialised when they are inlined under a target attribute.
  const __mmask16 all = 0xffff;
  const __mmask8 all_pd = 0xff;
  const __m512d ab = _mm512_castps_pd(_mm512_add_ps(_mm512_maskz_unpacklo_ps(all, v[0], v[1]), _mm512_maskz_unpackhi_ps(all, v[0], v[1])));
  const __m512d cd = _mm512_castps_pd(_mm512_add_ps(_mm512_maskz_unpacklo_ps(all, v[2], v[3]), _mm512_maskz_unpackhi_ps(all, v[2], v[3])));
  const __m512 s = _mm512_add_ps(_mm512_castpd_ps(_mm512_maskz_unpacklo_pd(all_pd, ab, cd)), _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(all_pd, ab, cd)));
  const __m256 h = _mm256_add_ps(_mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xf, _mm512_castps_pd(s), 0)), _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xf, _mm512_castps_pd(s), 1)));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// One step of 32 k of a tile: R A vectors, then each B row's vector against all of them.
template <int R>
__attribute__((target("avx512f,avx512bw,avx512bf16"), always_inline)) inline void bf16_tile_step(__m512 (&acc)[R][4], const uint16_t* const (&a)[R],
                                                                                             const uint16_t* const (&brow)[4], int64_t t,
                                                                                             __mmask32 mask) {
  __m512bh av[R];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) av[i] = (__m512bh)_mm512_maskz_loadu_epi16(mask, a[i] + t);
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const __m512bh bv = (__m512bh)_mm512_maskz_loadu_epi16(mask, brow[j] + t);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], av[i], bv);
  }
}

// C[i0 .. i0 + R, j0 .. j0 + cols), cols ≤ 4 (a short group repeats its last B row). 32 k per
// step; the last step's loads are masked to the k left (zeros add nothing).
template <int R>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void bf16_dot_tile(const uint16_t* a_base, int64_t lda, const uint16_t* b, int64_t ldb,
                                                                          int64_t k, int64_t i0, int64_t j0, int64_t cols, float* c, int64_t ldc,
                                                                          float alpha, float beta, bool prefetch_next) {
  constexpr int kCols = 4;
  __m512 acc[R][kCols];
  const uint16_t* a[R];
  const uint16_t* brow[kCols];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    a[i] = a_base + (i0 + i) * lda;
#pragma GCC unroll 4
    for (int j = 0; j < kCols; ++j) acc[i][j] = _mm512_setzero_ps();
  }
#pragma GCC unroll 4
  for (int j = 0; j < kCols; ++j) brow[j] = b + (j0 + std::min<int64_t>(j, cols - 1)) * ldb;
  int64_t t = 0;
  if (prefetch_next) {
    // The next group's B rows (first read by this group's first tile, from memory).
    for (; t + 32 <= k; t += 32) {
#pragma GCC unroll 4
      for (int j = 0; j < kCols; ++j) _mm_prefetch(reinterpret_cast<const char*>(brow[j] + kCols * ldb + t), _MM_HINT_T0);
      bf16_tile_step<R>(acc, a, brow, t, ~__mmask32{0});
    }
  } else {
    for (; t + 32 <= k; t += 32) bf16_tile_step<R>(acc, a, brow, t, ~__mmask32{0});
  }
  if (t < k) bf16_tile_step<R>(acc, a, brow, t, static_cast<__mmask32>((uint64_t{1} << (k - t)) - 1));  // the last k, masked (zeros add nothing)
  // Unrolled like every loop over the accumulators: one rolled loop left them in memory, stored
  // after every step of k.
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    alignas(16) float sums[4];
    _mm_store_ps(sums, sum_lanes_of_4(acc[i]));
    float* out = c + (i0 + i) * ldc + j0;
    for (int64_t j = 0; j < cols; ++j) out[j] = alpha * sums[j] + (beta == 0.0f ? 0.0f : beta * out[j]);  // beta 0 ignores NaN garbage
  }
}

}  // namespace

void bf16_dot_tiles(const uint16_t* a, int64_t lda, int64_t m, const uint16_t* b, int64_t ldb, int64_t k, int64_t j0, int64_t j1,
                    float* c, int64_t ldc, float alpha, float beta) {
  constexpr int kRows = 6;  // 24 accumulators, 6 A vectors and a B vector: 31 of the 32 registers
  for (int64_t j = j0; j < j1; j += 4) {
    const int64_t cols = std::min<int64_t>(4, j1 - j);
    int64_t i = 0;
    for (; i + kRows <= m; i += kRows) bf16_dot_tile<kRows>(a, lda, b, ldb, k, i, j, cols, c, ldc, alpha, beta, i == 0);
    switch (m - i) {
      case 0: break;
      case 1: bf16_dot_tile<1>(a, lda, b, ldb, k, i, j, cols, c, ldc, alpha, beta, i == 0); break;
      case 2: bf16_dot_tile<2>(a, lda, b, ldb, k, i, j, cols, c, ldc, alpha, beta, i == 0); break;
      case 3: bf16_dot_tile<3>(a, lda, b, ldb, k, i, j, cols, c, ldc, alpha, beta, i == 0); break;
      case 4: bf16_dot_tile<4>(a, lda, b, ldb, k, i, j, cols, c, ldc, alpha, beta, i == 0); break;
      default: bf16_dot_tile<5>(a, lda, b, ldb, k, i, j, cols, c, ldc, alpha, beta, i == 0); break;
    }
  }
}

#else

bool cpu_has_bf16_dot() { return false; }

void bf16_dot_tiles(const uint16_t*, int64_t, int64_t, const uint16_t*, int64_t, int64_t, int64_t, int64_t, float*, int64_t, float, float) {
  SMELT_FAIL("gemm: the bf16 dot tiles were not built for this CPU architecture");
}

void bf16_micro_kernel_12x32(int64_t, const uint32_t*, const uint32_t*, float*, int64_t, int64_t, int64_t, float, bool) {
  SMELT_FAIL("gemm: the bf16 micro-kernel was not built for this CPU architecture");
}

#endif

}  // namespace smelt
