// The dot path on Q4_0 and Q8_0 rows interleaved by 8 (Q4_0X8, Q8_0X8, runtime/quant.h):
// decoding's GEMV over a group of 8 weight rows at a time. Per block of 32 values a group holds
// the 8 rows' scales side by side and their values row after row. On AVX2 the 8 rows' sums end
// in one register (Q4_0: one 32-byte load is two rows' nibbles, vpmaddubsw against the
// activation block with its halves broadcast to both 128-bit lanes, three vphaddd folds; Q8_0:
// one load per row, the folds pairing even and odd rows), and the 8 scales convert in one
// vcvtph2ps: every lane accumulates one row, with no per-row scale broadcast and no horizontal
// sum per row. Q4_0's −8 offset is taken once per block for all 8 rows. On AVX-512 the Q4_0 and
// Q4_K kernels run 512 bits wide (four rows' nibbles, or two rows' sub-block pair, per load):
// Q4_0 keeps float partial sums per row and folds them once per group; Q4_K weights each
// sub-block's sums by the rows' integer scales as it widens them and folds once per
// super-block; on AVX3_DL the products take VNNI's vpdpbusd / vpdpwssd. llama.cpp repacks Q4_0 likewise at load (CPU_REPACK); this layout and kernel
// are smelt's own. Included by gemm_dot.cc inside its foreach_target loop.
#if defined(SMELT_OPS_CPU_QUANT_DOT_X8_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SMELT_OPS_CPU_QUANT_DOT_X8_INL_H_
#undef SMELT_OPS_CPU_QUANT_DOT_X8_INL_H_
#else
#define SMELT_OPS_CPU_QUANT_DOT_X8_INL_H_
#endif

#include <algorithm>
#include <cstdint>

#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "ops/cpu/cpu_kernels.h"
#include "runtime/quant.h"

HWY_BEFORE_NAMESPACE();
// AVX3_DL: its AVX-512 VNNI (Highway's target string names only AVX-VNNI). With GCC, whose
// target pragmas accumulate; other compilers take the AVX2 kernels on that target too.
#if HWY_TARGET == HWY_AVX3_DL && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx512vnni")
#undef SMELT_X8_VNNI
#define SMELT_X8_VNNI 1
#else
#undef SMELT_X8_VNNI
#define SMELT_X8_VNNI 0
#endif
namespace smelt {
namespace HWY_NAMESPACE {

// A group's bytes per block of 32 values: 8 scales, then 8 rows' values.
template <DType W>
constexpr int64_t kGroupBlockBytes = kX8Rows * quant_block_bytes(W);

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
// How far ahead a group's blocks are fetched: the hardware prefetcher starts late on a row group
// of a few hundred bytes. AVX-512's decode streams faster and wants more in flight (SmolLM2 q4_0
// on Zen 5, three alternating rounds: 1 KiB 263, 2 KiB 275, 4 KiB 288 tok/s).
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
constexpr int64_t kX8Prefetch = 4096;
#else
constexpr int64_t kX8Prefetch = 1024;
#endif

// The 8 rows' totals, lanes in kX8ScaleOrder, stored in row order: one permute (a scalar
// scatter per row of A cost as much as a block's arithmetic on prefill's short rows).
HWY_INLINE void x8_store_rows(__m256 lanes, float* out) {
  const __m256i row_order = _mm256_setr_epi32(kX8ScaleSlot[0], kX8ScaleSlot[1], kX8ScaleSlot[2], kX8ScaleSlot[3], kX8ScaleSlot[4],
                                              kX8ScaleSlot[5], kX8ScaleSlot[6], kX8ScaleSlot[7]);
  _mm256_storeu_ps(out, _mm256_permutevar8x32_ps(lanes, row_order));
}

// Σ q·a of the 8 rows of a Q4_0 group block (nibbles as stored, unsigned 0..15) against the
// blocks of M rows of A (a[i]), lanes in kX8ScaleOrder (AVX2; AVX-512 has x8_q4_0_dot_512).
// One 32-byte load holds rows 2p (low 128 bits) and 2p + 1; its nibbles are split once for all
// M rows of A (prefill's tiles of 4).
template <int M>
HWY_INLINE void x8_sums_q4_0(const uint8_t* values, const int8_t* const* a, __m256i (&sums)[M]) {
  const __m256i low = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  __m256i half[2][M];  // rows 0..3, then 4..7: the first fold
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    __m256i pair[2][M];  // rows 2p and 2p + 1: 4 int32 partial sums each
#pragma GCC unroll 2
    for (int pp = 0; pp < 2; ++pp) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(values + 32 * (2 * h + pp)));
      const __m256i q_first = _mm256_and_si256(v, low), q_second = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) {
        const __m256i a_first = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a[i])));
        const __m256i a_second = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a[i] + 16)));
        // Each int16 pair sum is at most 2·15·127: two of them add without saturating.
        const __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(q_first, a_first), _mm256_maddubs_epi16(q_second, a_second));
        pair[pp][i] = _mm256_madd_epi16(pairs, ones);
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) half[h][i] = _mm256_hadd_epi32(pair[0][i], pair[1][i]);
  }
  // Lanes [r0 r2 r4 r6 | r1 r3 r5 r7] after three folds: kX8ScaleOrder.
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i) sums[i] = _mm256_hadd_epi32(half[0][i], half[1][i]);
}

// The same for a Q8_0 group block: one 32-byte load per row, signed weights (their sign moved
// onto a, as the plain Q8_0 kernel does), then the 8 rows folded into kX8ScaleOrder's lanes.
HWY_INLINE __m256i x8_sums_q8_0(const uint8_t* values, const int8_t* a) {
  const __m256i ones = _mm256_set1_epi16(1), av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a));
  __m256i row[kX8Rows];
#pragma GCC unroll 8
  for (int r = 0; r < kX8Rows; ++r) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(values + 32 * r));
#if SMELT_X8_VNNI
    row[r] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(w, w), _mm256_sign_epi8(av, w));
#else
    row[r] = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(av, w)), ones);
#endif
  }
  // Even rows fold into the first register, odd rows into the second, each as [low-half sums |
  // high-half sums]; adding the halves gives [r0 r2 r4 r6 | r1 r3 r5 r7].
  const __m256i even = _mm256_hadd_epi32(_mm256_hadd_epi32(row[0], row[2]), _mm256_hadd_epi32(row[4], row[6]));
  const __m256i odd = _mm256_hadd_epi32(_mm256_hadd_epi32(row[1], row[3]), _mm256_hadd_epi32(row[5], row[7]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(even, odd, 0x20), _mm256_permute2x128_si256(even, odd, 0x31));
}

// out[i][r] = Σ over blocks of group row r · A row i, for M rows of A (aq, ad: A's int8 blocks
// and scales; a_isum: each A block's Σ q_a) and one group of 8 weight rows at `group`.
template <int M, DType W>
HWY_INLINE void x8_blocks_dot(const uint8_t* group, const int8_t* aq, const float* ad, const int32_t* a_isum, const float* a_sums, int64_t k, float (*out)[kX8Rows]) {
  const int64_t blocks = k / kQuantBlock;
  __m256 acc[M];
  for (int i = 0; i < M; ++i) acc[i] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b, group += kGroupBlockBytes<W>) {
    // A group's blocks are contiguous: fetch ~1 KiB ahead (the hardware prefetcher starts late
    // on a row group of a few hundred bytes).
    for (int64_t line = 0; line < kGroupBlockBytes<W>; line += 64) hwy::Prefetch(group + kX8Prefetch + line);
    const __m256 scales = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group)));
    const uint8_t* values = group + 2 * kX8Rows;
    const int8_t* a[M];
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) a[i] = aq + i * k + b * kQuantBlock;
    __m256i sums[M];
    if constexpr (W == DType::Q4_0) {
      x8_sums_q4_0<M>(values, a, sums);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i)  // Q4_0's −8, once for all 8 rows: Σ(q − 8)·a = Σq·a − 8·Σa
        sums[i] = _mm256_sub_epi32(sums[i], _mm256_set1_epi32(8 * a_isum[i * blocks + b]));
    } else {
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) sums[i] = x8_sums_q8_0(values, a[i]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i)
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[i]), _mm256_mul_ps(scales, _mm256_set1_ps(ad[i * blocks + b])), acc[i]);
  }
  for (int i = 0; i < M; ++i) {
    x8_store_rows(acc[i], out[i]);
  }
}

// Eight row vectors folded into one register of their totals, lanes in kX8ScaleOrder (even
// rows into one half, odd rows into the other, as x8_sums_q8_0 does).
HWY_INLINE __m256i x8_fold(const __m256i (&row)[kX8Rows]) {
  const __m256i even = _mm256_hadd_epi32(_mm256_hadd_epi32(row[0], row[2]), _mm256_hadd_epi32(row[4], row[6]));
  const __m256i odd = _mm256_hadd_epi32(_mm256_hadd_epi32(row[1], row[3]), _mm256_hadd_epi32(row[5], row[7]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(even, odd, 0x20), _mm256_permute2x128_si256(even, odd, 0x31));
}

// 8 unsigned bytes (one per row, kX8ScaleOrder) as 8 floats.
HWY_INLINE __m256 x8_bytes_f32(const uint8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
// Four registers of two rows' 8 int32 partials each (rows 2p and 2p + 1 in the 256-bit halves)
// folded to the rows' totals: 32-bit unpacks of pairs of registers and adds leave each 128-bit
// lane (Z0, Z1 | …) partials, 64-bit unpacks and adds each register's lane total, a lane swap-add
// each row's, and one permute takes the two lanes holding rows (0 2 4 6) and (1 3 5 7).
HWY_INLINE __m256i x8_fold_512(const __m512i (&z)[4]) {
  const __m512i u = _mm512_add_epi32(_mm512_unpacklo_epi32(z[0], z[1]), _mm512_unpackhi_epi32(z[0], z[1]));
  const __m512i v = _mm512_add_epi32(_mm512_unpacklo_epi32(z[2], z[3]), _mm512_unpackhi_epi32(z[2], z[3]));
  const __m512i w = _mm512_add_epi32(_mm512_unpacklo_epi64(u, v), _mm512_unpackhi_epi64(u, v));
  const __m512i t = _mm512_add_epi32(w, _mm512_shuffle_i32x4(w, w, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm512_castsi512_si256(_mm512_permutexvar_epi32(_mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 0, 0, 0, 0, 0, 0, 0, 0), t));
}
#endif

// Σ q·a of the 8 rows of a Q4_KX8 group over the sub-block pair at `nibbles` (each row's 32
// bytes 128 apart: low nibbles the first sub-block, high the second) against A's 64 values at
// `a`: the 8 rows' totals for each sub-block, lanes in kX8ScaleOrder (AVX2; AVX-512 has
// x8_q4_k_dot_512).
HWY_INLINE void x8_q4_k_sums(const uint8_t* nibbles, const int8_t* a, __m256i& lo_sums, __m256i& hi_sums) {
  const __m256i low = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  const __m256i a_lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a));
  const __m256i a_hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 32));
  __m256i lo[kX8Rows], hi[kX8Rows];
#pragma GCC unroll 8
  for (int r = 0; r < kX8Rows; ++r) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(nibbles + 128 * r));
    lo[r] = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_and_si256(v, low), a_lo), ones);
    hi[r] = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), low), a_hi), ones);
  }
  lo_sums = x8_fold(lo);
  hi_sums = x8_fold(hi);
}

// The Q4_KX8 group (layout in runtime/quant.h) against M rows of A: per sub-block s the 8 rows'
// Σ q·a fold into one register and take d·sc_s·da in one multiply for all 8 rows; the mins'
// term, dmin·Σ_s m_s·(da·Σa)_s, is 8 FMAs per super-block for all 8 rows.
template <int M>
HWY_INLINE void x8_q4_k_dot(const uint8_t* group, const int8_t* aq, const float* ad, const float* a_sums, int64_t k, float (*out)[kX8Rows]) {
  const int64_t blocks = k / kQuantBlock, supers = k / kQ4KBlock;
  __m256 acc[M];
  for (int i = 0; i < M; ++i) acc[i] = _mm256_setzero_ps();
  for (int64_t sb = 0; sb < supers; ++sb, group += kQ4KX8GroupBytes) {
    for (int64_t line = 0; line < kQ4KX8GroupBytes; line += 64) hwy::Prefetch(group + kQ4KX8GroupBytes + line);
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group)));
    const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group + 16)));
    // The 8 rows' d·sc and dmin·m of each sub-block, once for all M rows of A.
    __m256 scale[8], min[8];
#pragma GCC unroll 8
    for (int sub = 0; sub < 8; ++sub) {
      scale[sub] = _mm256_mul_ps(d, x8_bytes_f32(group + 32 + 8 * sub));
      min[sub] = _mm256_mul_ps(dmin, x8_bytes_f32(group + 96 + 8 * sub));
    }
    const uint8_t* nibbles = group + 160;
    for (int i = 0; i < M; ++i) {
      const int8_t* a = aq + i * k + sb * kQ4KBlock;
      const float* da = ad + i * blocks + sb * 8;
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {  // sub-blocks 2c (low nibbles) and 2c + 1 (high)
        __m256i lo_sums, hi_sums;
        x8_q4_k_sums(nibbles + 32 * c, a + 64 * c, lo_sums, hi_sums);
        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo_sums), _mm256_mul_ps(scale[2 * c], _mm256_set1_ps(da[2 * c])), acc[i]);
        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi_sums), _mm256_mul_ps(scale[2 * c + 1], _mm256_set1_ps(da[2 * c + 1])), acc[i]);
      }
#pragma GCC unroll 8
      for (int sub = 0; sub < 8; ++sub) acc[i] = _mm256_fnmadd_ps(min[sub], _mm256_set1_ps(a_sums[i * blocks + sb * 8 + sub]), acc[i]);
    }
  }
  for (int i = 0; i < M; ++i) {
    x8_store_rows(acc[i], out[i]);
  }
}
#else
// Elsewhere: the same sums row by row in scalars (these targets do not decode fast anyway; the
// result is what the AVX2 kernel computes, up to float summation order).
template <int M, DType W>
HWY_INLINE void x8_blocks_dot(const uint8_t* group, const int8_t* aq, const float* ad, const int32_t* a_isum, const float* a_sums, int64_t k, float (*out)[kX8Rows]) {
  const int64_t blocks = k / kQuantBlock, value_bytes = quant_block_bytes(W) - 2;
  for (int i = 0; i < M; ++i)
    for (int r = 0; r < kX8Rows; ++r) out[i][r] = 0.0f;
  for (int64_t b = 0; b < blocks; ++b, group += kGroupBlockBytes<W>)
    for (int s = 0; s < kX8Rows; ++s) {
      const int r = kX8ScaleOrder[s];
      const float dw = f16_to_f32(static_cast<uint16_t>(group[2 * s] | (group[2 * s + 1] << 8)));
      const uint8_t* q = group + 2 * kX8Rows + value_bytes * r;
      for (int i = 0; i < M; ++i) {
        const int8_t* a = aq + i * k + b * kQuantBlock;
        int32_t sum = 0;
        if constexpr (W == DType::Q4_0) {
          for (int c = 0; c < 16; ++c) sum += (q[c] & 0x0F) * a[c] + (q[c] >> 4) * a[c + 16];
          sum -= 8 * a_isum[i * blocks + b];
        } else {
          for (int c = 0; c < 32; ++c) sum += static_cast<int8_t>(q[c]) * a[c];
        }
        out[i][r] += static_cast<float>(sum) * (dw * ad[i * blocks + b]);
      }
    }
}
template <int M>
HWY_INLINE void x8_q4_k_dot(const uint8_t* group, const int8_t* aq, const float* ad, const float* a_sums, int64_t k, float (*out)[kX8Rows]) {
  const int64_t blocks = k / kQuantBlock, supers = k / kQ4KBlock;
  for (int i = 0; i < M; ++i)
    for (int r = 0; r < kX8Rows; ++r) out[i][r] = 0.0f;
  for (int64_t sb = 0; sb < supers; ++sb, group += kQ4KX8GroupBytes)
    for (int slot = 0; slot < kX8Rows; ++slot) {
      const int r = kX8ScaleOrder[slot];
      const float d = f16_to_f32(static_cast<uint16_t>(group[2 * slot] | (group[2 * slot + 1] << 8)));
      const float dmin = f16_to_f32(static_cast<uint16_t>(group[16 + 2 * slot] | (group[17 + 2 * slot] << 8)));
      const uint8_t* q = group + 160 + 128 * r;
      for (int i = 0; i < M; ++i)
        for (int sub = 0; sub < 8; ++sub) {
          const int8_t* a = aq + i * k + sb * kQ4KBlock + sub * kQuantBlock;
          int32_t sum = 0;
          for (int c = 0; c < 32; ++c) sum += (sub % 2 == 0 ? q[32 * (sub / 2) + c] & 0x0F : q[32 * (sub / 2) + c] >> 4) * a[c];
          const int64_t blk = i * blocks + sb * 8 + sub;
          out[i][r] += static_cast<float>(sum) * (d * group[32 + 8 * sub + slot] * ad[blk]) - dmin * group[96 + 8 * sub + slot] * a_sums[blk];
        }
    }
}
#endif

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
// The Q4_0X8 group against M rows of A on AVX-512, folding once per group instead of once per
// block: each A row keeps two float accumulators whose 128-bit lanes are rows (0..3, then 4..7)
// and whose elements are a row's four partial sums, each block's int32 partials converted and
// multiplied by their row's scale (spread across its lane by one permute per block, shared by
// the M rows) times A's. Q4_0's −8 offset, −8·Σa·da·d per row and block, accumulates apart in
// one 8-row register. The lanes are folded to the 8 rows' totals at the end.
template <int M>
HWY_INLINE void x8_q4_0_dot_512(const uint8_t* group, const int8_t* aq, const float* ad, const int32_t* a_isum, int64_t k,
                                float (*out)[kX8Rows]) {
  const int64_t blocks = k / kQuantBlock;
  const __m512i low = _mm512_set1_epi8(0x0F);
  // Scales arrive in kX8ScaleOrder (rows 0 2 4 6 1 3 5 7): row r's is at slot kX8ScaleSlot[r].
  const __m512i spread_first = _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 1, 1, 1, 1, 5, 5, 5, 5);   // rows 0..3
  const __m512i spread_second = _mm512_setr_epi32(2, 2, 2, 2, 6, 6, 6, 6, 3, 3, 3, 3, 7, 7, 7, 7);  // rows 4..7
  __m512 acc[M][2];
  __m256 offset[M];
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i) {
    acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    offset[i] = _mm256_setzero_ps();
  }
  for (int64_t b = 0; b < blocks; ++b, group += kGroupBlockBytes<DType::Q4_0>) {
    for (int64_t line = 0; line < kGroupBlockBytes<DType::Q4_0>; line += 64) hwy::Prefetch(group + kX8Prefetch + line);
    const __m256 scales = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group)));
    const __m512 wide = _mm512_castps256_ps512(scales);
    const __m512 row_scale[2] = {_mm512_permutexvar_ps(spread_first, wide), _mm512_permutexvar_ps(spread_second, wide)};
    const uint8_t* values = group + 2 * kX8Rows;
    __m512i q_first[2], q_second[2];
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const __m512i v = _mm512_loadu_si512(values + 64 * h);
      q_first[h] = _mm512_and_si512(v, low);
      q_second[h] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
    }
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      const int8_t* a = aq + i * k + b * kQuantBlock;
      const float da = ad[i * blocks + b];
      const __m512i a_first = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a)));
      const __m512i a_second = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + 16)));
      const __m512 vda = _mm512_set1_ps(da);
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
#if SMELT_X8_VNNI
        const __m512i part = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), q_first[h], a_first), q_second[h], a_second);
#else
        const __m512i part = _mm512_madd_epi16(
            _mm512_add_epi16(_mm512_maddubs_epi16(q_first[h], a_first), _mm512_maddubs_epi16(q_second[h], a_second)), _mm512_set1_epi16(1));
#endif
        acc[i][h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(part), _mm512_mul_ps(row_scale[h], vda), acc[i][h]);
      }
      offset[i] = _mm256_fmadd_ps(scales, _mm256_set1_ps(8.0f * static_cast<float>(a_isum[i * blocks + b]) * da), offset[i]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i) {
    // Lane L of `halves`: (p0 + p2, q0 + q2, p1 + p3, q1 + q3), p row L's partials and q row L + 4's;
    // of `totals`: (row L, row L + 4, …); then the permute into kX8ScaleOrder.
    const __m512 halves = _mm512_add_ps(_mm512_unpacklo_ps(acc[i][0], acc[i][1]), _mm512_unpackhi_ps(acc[i][0], acc[i][1]));
    const __m512 totals = _mm512_add_ps(halves, _mm512_permute_ps(halves, _MM_SHUFFLE(1, 0, 3, 2)));
    const __m512i order = _mm512_setr_epi32(0, 8, 1, 9, 4, 12, 5, 13, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m256 rows = _mm256_sub_ps(_mm512_castps512_ps256(_mm512_permutexvar_ps(order, totals)), offset[i]);
    x8_store_rows(rows, out[i]);
  }
}
#endif

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
// The Q4_KX8 group against M rows of A on AVX-512. A's scale is one per super-block (see
// quantize_a_rows), so each sub-block's int16 pair sums are weighted by the rows' integer
// scales in the same instruction that widens them to int32 (vpmaddwd, or VNNI's vpdpwssd,
// which also adds), and the 8 sub-blocks add up in int32: one fold and one float multiply per
// super-block instead of two per sub-block pair. Registers hold two rows each (rows 2p and
// 2p + 1 in the 256-bit halves); the scales are spread to match once per super-block and read
// from memory by all M rows, and the nibbles are split once per chunk for all M rows.
template <int M>
HWY_INLINE void x8_q4_k_dot_512(const uint8_t* group, const int8_t* aq, const float* ad, const float* a_sums, int64_t k,
                                float (*out)[kX8Rows]) {
  const int64_t blocks = k / kQuantBlock, supers = k / kQ4KBlock;
  const __m512i low = _mm512_set1_epi8(0x0F);
  // int16 permute indices: 16 copies of row 2p's slot, then 16 of row 2p + 1's (kX8ScaleSlot).
  __m512i spread[4];
  for (int p = 0; p < 4; ++p)
    spread[p] = _mm512_inserti64x4(_mm512_set1_epi16(static_cast<int16_t>(kX8ScaleSlot[2 * p])),
                                   _mm256_set1_epi16(static_cast<int16_t>(kX8ScaleSlot[2 * p + 1])), 1);
  __m256 acc[M];
  for (int i = 0; i < M; ++i) acc[i] = _mm256_setzero_ps();
  for (int64_t sb = 0; sb < supers; ++sb, group += kQ4KX8GroupBytes) {
    for (int64_t line = 0; line < kQ4KX8GroupBytes; line += 64) hwy::Prefetch(group + std::max(kX8Prefetch, kQ4KX8GroupBytes) + line);
    alignas(64) __m512i scale[8][4];  // sub-block s, row pair p: the rows' 6-bit scales as int16
#pragma GCC unroll 8
    for (int sub = 0; sub < 8; ++sub) {
      const __m512i bytes = _mm512_cvtepu8_epi16(_mm256_castsi128_si256(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(group + 32 + 8 * sub))));
#pragma GCC unroll 4
      for (int p = 0; p < 4; ++p) scale[sub][p] = _mm512_permutexvar_epi16(spread[p], bytes);
    }
    __m512i isum[M][4];
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i)
      for (int p = 0; p < 4; ++p) isum[i][p] = _mm512_setzero_si512();
    const uint8_t* nibbles = group + 160;
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {  // sub-blocks 2c (low nibbles) and 2c + 1 (high)
      __m512i q_lo[4], q_hi[4];
#pragma GCC unroll 4
      for (int p = 0; p < 4; ++p) {
        const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(nibbles + 256 * p + 32 * c))),
                                             _mm256_loadu_si256(reinterpret_cast<const __m256i*>(nibbles + 256 * p + 128 + 32 * c)), 1);
        q_lo[p] = _mm512_and_si512(v, low);
        q_hi[p] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
      }
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) {
        const int8_t* a = aq + i * k + sb * kQ4KBlock + 64 * c;
        const __m512i a_lo = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)));
        const __m512i a_hi = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 32)));
#pragma GCC unroll 4
        for (int p = 0; p < 4; ++p) {
          // int16 pair sums (≤ 2·15·127) times 6-bit scales: each int32 sum of two stays below 2^18.
          const __m512i lo = _mm512_maddubs_epi16(q_lo[p], a_lo), hi = _mm512_maddubs_epi16(q_hi[p], a_hi);
#if SMELT_X8_VNNI
          isum[i][p] = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(isum[i][p], lo, scale[2 * c][p]), hi, scale[2 * c + 1][p]);
#else
          isum[i][p] = _mm512_add_epi32(isum[i][p], _mm512_add_epi32(_mm512_madd_epi16(lo, scale[2 * c][p]), _mm512_madd_epi16(hi, scale[2 * c + 1][p])));
#endif
        }
      }
    }
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group)));
    const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group + 16)));
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      const float da = ad[i * blocks + sb * 8];  // one A scale per super-block
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(x8_fold_512(isum[i])), _mm256_mul_ps(d, _mm256_set1_ps(da)), acc[i]);
      // The mins' term: dmin · Σ_s m_s · (da · Σa)_s, for the 8 rows at once.
      __m256 mins = _mm256_setzero_ps();
#pragma GCC unroll 8
      for (int sub = 0; sub < 8; ++sub)
        mins = _mm256_fmadd_ps(x8_bytes_f32(group + 96 + 8 * sub), _mm256_set1_ps(a_sums[i * blocks + sb * 8 + sub]), mins);
      acc[i] = _mm256_fnmadd_ps(dmin, mins, acc[i]);
    }
  }
  for (int i = 0; i < M; ++i) {
    x8_store_rows(acc[i], out[i]);
  }
}
#endif

#if SMELT_X8_VNNI
// The Q8_0X8 group against M rows of A on AVX3_DL, like x8_q4_0_dot_512: one 64-byte load is
// two rows (each 256-bit half a row), the signed weights taken as unsigned w + 128 (one xor per
// load for all M rows) so that vpdpbusd multiplies them by A directly, and the 128·a that adds
// taken off every lane in int32; float partial sums per row pair, each scaled by its row's
// scale, folded once per group. (vpmaddubsw could saturate on w + 128, so AVX3 without VNNI keeps the
// 256-bit kernel.)
template <int M>
HWY_INLINE void x8_q8_0_dot_512(const uint8_t* group, const int8_t* aq, const float* ad, const int32_t* a_isum, int64_t k,
                                float (*out)[kX8Rows]) {
  const int64_t blocks = k / kQuantBlock;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512i spread[4];  // 8 copies of row 2p's scale slot, then 8 of row 2p + 1's
  for (int p = 0; p < 4; ++p)
    spread[p] = _mm512_inserti64x4(_mm512_set1_epi32(kX8ScaleSlot[2 * p]), _mm256_set1_epi32(kX8ScaleSlot[2 * p + 1]), 1);
  __m512 acc[M][4];
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i)
    for (int p = 0; p < 4; ++p) acc[i][p] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b, group += kGroupBlockBytes<DType::Q8_0>) {
    for (int64_t line = 0; line < kGroupBlockBytes<DType::Q8_0>; line += 64) hwy::Prefetch(group + kX8Prefetch + line);
    const __m256 scales = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group)));
    const __m512 wide = _mm512_castps256_ps512(scales);
    __m512 row_scale[4];
    __m512i w[4];
#pragma GCC unroll 4
    for (int p = 0; p < 4; ++p) {
      row_scale[p] = _mm512_permutexvar_ps(spread[p], wide);
      w[p] = _mm512_xor_si512(_mm512_loadu_si512(group + 2 * kX8Rows + 64 * p), flip);
    }
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      const float da = ad[i * blocks + b];
      const __m512i a = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq + i * k + b * kQuantBlock)));
      const __m512 vda = _mm512_set1_ps(da);
      // The 128·a that w + 128 adds comes off every lane in int32 (128 times the lane's four
      // values of a: one more vpdpbusd), so each lane holds its exact Σ w·a. (Taken off per row,
      // in float at the end or in one lane, the biased lanes' rounding survived the cancellation:
      // SmolLM2's eval loss moved by 5e-4 and 3.5e-3.)
      const __m512i bias = _mm512_dpbusd_epi32(_mm512_setzero_si512(), flip, a);
#pragma GCC unroll 4
      for (int p = 0; p < 4; ++p) {
        const __m512i exact = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), w[p], a), bias);
        acc[i][p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(exact), _mm512_mul_ps(row_scale[p], vda), acc[i][p]);
      }
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i) {
    // The fold of x8_fold_512 on floats: the 8 rows' totals in kX8ScaleOrder.
    const __m512 u = _mm512_add_ps(_mm512_unpacklo_ps(acc[i][0], acc[i][1]), _mm512_unpackhi_ps(acc[i][0], acc[i][1]));
    const __m512 v = _mm512_add_ps(_mm512_unpacklo_ps(acc[i][2], acc[i][3]), _mm512_unpackhi_ps(acc[i][2], acc[i][3]));
    const __m512 t = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(u), _mm512_castps_pd(v))),
                                   _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(u), _mm512_castps_pd(v))));
    const __m512 lanes4 = _mm512_add_ps(t, _mm512_shuffle_f32x4(t, t, _MM_SHUFFLE(2, 3, 0, 1)));
    const __m512i order = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 0, 0, 0, 0, 0, 0, 0, 0);
    x8_store_rows(_mm512_castps512_ps256(_mm512_permutexvar_ps(order, lanes4)), out[i]);
  }
}
#endif

// One group of 8 rows against M rows of A, whichever interleaved type.
template <int M, DType W>
HWY_INLINE void x8_group_dot(const uint8_t* group, const int8_t* aq, const float* ad, const int32_t* a_isum, const float* a_sums, int64_t k,
                             float (*out)[kX8Rows]) {
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  if constexpr (W == DType::Q4_K) x8_q4_k_dot_512<M>(group, aq, ad, a_sums, k, out);
  else if constexpr (W == DType::Q4_0) x8_q4_0_dot_512<M>(group, aq, ad, a_isum, k, out);
#if SMELT_X8_VNNI
  else if constexpr (W == DType::Q8_0) x8_q8_0_dot_512<M>(group, aq, ad, a_isum, k, out);
#endif
#else
  if constexpr (W == DType::Q4_K) x8_q4_k_dot<M>(group, aq, ad, a_sums, k, out);
#endif
  else x8_blocks_dot<M, W>(group, aq, ad, a_isum, a_sums, k, out);
}

// One group of 8 weight rows (the group's bytes at `group`) against A rows [i0, i0 + M).
template <int M, DType W>
void x8_group_rows(const GemmArgs& g, const uint8_t* group, const int8_t* aq, const float* ad, const int32_t* a_isum, const float* a_sums, int64_t i0,
                   int64_t j, int64_t j1) {
  const int64_t blocks = g.k / kQuantBlock;
  float sums[M][kX8Rows];
  x8_group_dot<M, W>(group, aq + i0 * g.k, ad + i0 * blocks, a_isum + i0 * blocks, a_sums + i0 * blocks, g.k, sums);
#if HWY_TARGET != HWY_SCALAR
  const hn::CappedTag<float, kX8Rows> d8;
  if (hn::Lanes(d8) == kX8Rows && j + kX8Rows <= j1) {  // a whole group: the 8 columns as one vector
    const auto alpha = hn::Set(d8, g.alpha), beta = hn::Set(d8, g.beta);
    for (int i = 0; i < M; ++i) {
      float* c = g.c + (i0 + i) * g.ldc + j;
      auto v = hn::Mul(alpha, hn::LoadU(d8, sums[i]));
      if (g.beta != 0.0f) v = hn::MulAdd(beta, hn::LoadU(d8, c), v);  // beta 0 ignores NaN garbage in C
      hn::StoreU(v, d8, c);
    }
    return;
  }
#endif
  for (int i = 0; i < M; ++i)
    for (int r = 0; r < kX8Rows && j + r < j1; ++r) {
      float* c = g.c + (i0 + i) * g.ldc + j + r;
      *c = g.alpha * sums[i][r] + (g.beta == 0.0f ? 0.0f : g.beta * *c);  // beta 0 ignores NaN garbage in C
    }
}

// Columns [j0, j1) (j0 a multiple of 8) for every row of A, in tiles of 4 rows: a group's bytes
// (a few KiB) stay in L1 while the tiles of A stream past them. Many rows (scoring) go in blocks
// of kX8RowBlock, so that a block of A's int8 rows stays in L2 across the task's groups.
constexpr int64_t kX8RowBlock = 64;
template <DType W>
void x8_dot_task_of(const GemmArgs& g, const int8_t* aq, const float* ad, const int32_t* a_isum, const float* a_sums, int64_t j0, int64_t j1) {
  const int64_t group_bytes = static_cast<int64_t>(dtype_bytes(x8_of(W), kX8Rows * g.k));
  for (int64_t block = 0; block < g.m; block += kX8RowBlock) {
    const int64_t end = std::min(g.m, block + kX8RowBlock);
    for (int64_t j = j0; j < j1; j += kX8Rows) {
      const uint8_t* group = g.b_quant + (j / kX8Rows) * group_bytes;
      int64_t i0 = block;
      for (; i0 + 4 <= end; i0 += 4) x8_group_rows<4, W>(g, group, aq, ad, a_isum, a_sums, i0, j, j1);
      switch (end - i0) {
        case 1: x8_group_rows<1, W>(g, group, aq, ad, a_isum, a_sums, i0, j, j1); break;
        case 2: x8_group_rows<2, W>(g, group, aq, ad, a_isum, a_sums, i0, j, j1); break;
        case 3: x8_group_rows<3, W>(g, group, aq, ad, a_isum, a_sums, i0, j, j1); break;
        default: break;
      }
    }
  }
}

// Columns [j0, j1) (j0 a multiple of 8) of a dot-path product whose B is Q4_0X8 or Q8_0X8: any
// number of A rows (decoding's few, and prefill's: an integer GEMM, no f32 copy of the weights).
inline void x8_dot_task(const GemmArgs& g, const int8_t* aq, const float* ad, const int32_t* a_isum, const float* a_sums, int64_t j0,
                        int64_t j1) {
  if (g.b_quant_type == DType::Q8_0X8) x8_dot_task_of<DType::Q8_0>(g, aq, ad, a_isum, a_sums, j0, j1);
  else if (g.b_quant_type == DType::Q4_KX8) x8_dot_task_of<DType::Q4_K>(g, aq, ad, a_isum, a_sums, j0, j1);
  else x8_dot_task_of<DType::Q4_0>(g, aq, ad, a_isum, a_sums, j0, j1);
}

}  // namespace HWY_NAMESPACE
}  // namespace smelt
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
