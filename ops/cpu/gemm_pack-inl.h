// The packed GEMM's blocking and packing, per Highway target (included by gemm.cc inside its
// foreach_target loop; the guard below is Highway's per-target include-guard idiom): the
// micro-kernel's shape and the cache blocks, B packed into NR-wide column panels (from f32,
// bf16, a quantised Bᵀ or Bᵀ through register transposes), A into MR-row panels, and the panels
// rewritten for bf16 arithmetic.
#if defined(SMELT_OPS_CPU_GEMM_PACK_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SMELT_OPS_CPU_GEMM_PACK_INL_H_
#undef SMELT_OPS_CPU_GEMM_PACK_INL_H_
#else
#define SMELT_OPS_CPU_GEMM_PACK_INL_H_
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/dequant-inl.h"
#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/gemm_operands-inl.h"
#include "runtime/dtype.h"
#include "runtime/error.h"
#include "runtime/quant.h"

HWY_BEFORE_NAMESPACE();
namespace smelt {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The micro-kernel's MR × 2-vector block of C: 2·MR accumulators, the two B vectors and a
// broadcast must fit the vector registers (AVX-512's 32: MR = 12; AVX2's 16: MR = 6).
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
constexpr int64_t kMR = 12;
constexpr int64_t kKC = 256;   // K block: an MR×KC A panel and a KC×NR B panel stay in L1
constexpr int64_t kMC = 192;   // M block: the A block (MC×KC) stays in L2 while B panels stream past
#else
constexpr int64_t kMR = 6;
constexpr int64_t kKC = 320;
constexpr int64_t kMC = 96;
#endif
constexpr int64_t kNCTile = 1024;  // N columns per parallel task (an A block is packed once per task)

// out[t] = (r[0][t], ..., r[7][t]): an 8 × 8 transpose in registers (unpack, 64-bit unpack,
// 128-bit half swaps), for targets with 8-float vectors.
#if HWY_TARGET != HWY_SCALAR
template <class D, class V>
HWY_INLINE void transpose8x8(D d, V r[8]) {
  const hn::Repartition<double, D> dd;
  V t[8];
#pragma GCC unroll 16
  for (int i = 0; i < 8; i += 2) {
    t[i] = hn::InterleaveLower(d, r[i], r[i + 1]);
    t[i + 1] = hn::InterleaveUpper(d, r[i], r[i + 1]);
  }
  V u[8];
#pragma GCC unroll 16
  for (int i = 0; i < 8; i += 4)
  #pragma GCC unroll 16
    for (int j = 0; j < 2; ++j) {
      u[i + 2 * j] = hn::BitCast(d, hn::InterleaveLower(dd, hn::BitCast(dd, t[i + j]), hn::BitCast(dd, t[i + 2 + j])));
      u[i + 2 * j + 1] = hn::BitCast(d, hn::InterleaveUpper(dd, hn::BitCast(dd, t[i + j]), hn::BitCast(dd, t[i + 2 + j])));
    }
  // u[0..3] hold rows 0–3 of columns (0,4) (1,5) (2,6) (3,7) per 128-bit half; u[4..7] rows 4–7.
#pragma GCC unroll 16
  for (int i = 0; i < 4; ++i) {
    r[i] = hn::ConcatLowerLower(d, u[4 + i], u[i]);
    r[i + 4] = hn::ConcatUpperUpper(d, u[4 + i], u[i]);
  }
}
#endif

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
// r[c] = column c of the 16 × 16 block whose rows are r[0..15]. 32-bit then 64-bit interleaves
// leave, in 128-bit block b of u[4g + e], rows 4g..4g+3 of column 4b + e; two rounds of 128-bit
// block shuffles gather each column's four blocks. Highway 1.0 has no whole-block shuffle of
// two vectors, hence the intrinsics.
HWY_INLINE void transpose16x16(__m512 r[16]) {
  __m512 t[16], u[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
#pragma GCC unroll 16
  for (int g = 0; g < 4; ++g) {
    const __m512d t0 = _mm512_castps_pd(t[4 * g]), t1 = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d t2 = _mm512_castps_pd(t[4 * g + 2]), t3 = _mm512_castps_pd(t[4 * g + 3]);
    u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
#pragma GCC unroll 16
  for (int e = 0; e < 4; ++e) {
    // Blocks (0, 2) and (1, 3) of groups 0 and 1, then of groups 2 and 3.
    const __m512 x_even = _mm512_shuffle_f32x4(u[e], u[4 + e], 0x88), x_odd = _mm512_shuffle_f32x4(u[e], u[4 + e], 0xdd);
    const __m512 y_even = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0x88), y_odd = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0xdd);
    r[e] = _mm512_shuffle_f32x4(x_even, y_even, 0x88);       // block 0 of every group: column e
    r[8 + e] = _mm512_shuffle_f32x4(x_even, y_even, 0xdd);   // block 2: column 8 + e
    r[4 + e] = _mm512_shuffle_f32x4(x_odd, y_odd, 0x88);     // block 1: column 4 + e
    r[12 + e] = _mm512_shuffle_f32x4(x_odd, y_odd, 0xdd);    // block 3: column 12 + e
  }
}
#endif

// One panel of packed B (kc rows of nr floats) from nr rows of Bᵀ, src[j] pointing at row j's
// first k (nullptr past the last column: zero padding). Full panels go through register
// transposes, 16 × 16 on AVX-512 (below) and 8 × 8 elsewhere and for the rest of kc; a last,
// partial panel and the k left over, value by value.
template <typename BT>
void transpose_into_panel(const BT* const* src, int64_t kc, int64_t nr, int64_t cols, float* dst) {
  int64_t kk = 0;
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  const hn::ScalableTag<float> d16;
  if (cols == nr && nr % 16 == 0) {
    // 16 columns × 16 k: each load takes a whole cache line of a row of Bᵀ (the 8 × 8 slices
    // below take half a line and come back for the rest). One group of 16 rows at a time down
    // all of kc, so 16 row streams are in flight rather than the panel's 32 (3 % faster on the
    // long-K transposed product), and every loop unrolled so the 16 vectors stay in registers:
    // rolled, they went through the stack and this transpose took 10 % of that product's time,
    // three times a plain copy; unrolled, 3 %.
    const int64_t k16 = kc / 16 * 16;
    for (int64_t j = 0; j < nr; j += 16)
      for (kk = 0; kk < k16; kk += 16) {
        __m512 r[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) {
          hwy::Prefetch(src[j + i] + kk + 64);
          r[i] = load_f32(d16, src[j + i] + kk).raw;
        }
        transpose16x16(r);
#pragma GCC unroll 16
        for (int t = 0; t < 16; ++t) _mm512_storeu_ps(dst + (kk + t) * nr + j, r[t]);
      }
  }
#endif
#if HWY_TARGET != HWY_SCALAR
  const hn::CappedTag<float, 8> d8;
  if (hn::Lanes(d8) == 8 && cols == nr) {
    // 8 columns × 8 k at a time through registers.
    for (; kk + 8 <= kc; kk += 8)
      for (int64_t j = 0; j < nr; j += 8) {
        hn::Vec<decltype(d8)> r[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) {
          // Rows of Bᵀ are far apart and read 32 bytes at a time: too many streams for the
          // hardware prefetcher to follow, so ask for each row's next lines ahead.
          hwy::Prefetch(src[j + i] + kk + 64);
          r[i] = load_f32(d8, src[j + i] + kk);
        }
        transpose8x8(d8, r);
#pragma GCC unroll 8
        for (int t = 0; t < 8; ++t) hn::StoreU(r[t], d8, dst + (kk + t) * nr + j);
      }
  }
#endif
  for (; kk < kc; kk += 8) {
    const int64_t depth = std::min<int64_t>(8, kc - kk);
    for (int64_t j = 0; j < nr; ++j) {
      float* col = dst + kk * nr + j;
      for (int64_t t = 0; t < depth; ++t) col[t * nr] = src[j] ? to_f32(src[j][kk + t]) : 0.0f;
    }
  }
}

// Packs rows [s0, s1) of panels [p0, p1) of B[k0:k0+kc, 0:n] (nr columns each) from b (g.b or
// g.b_bf16): panel p holds rows k, each nr floats, zero padded. Runs on one thread; callers spread
// the panels, or for an untransposed B slices of rows (see packs_b_by_rows), over the pool.
template <typename BT>
void pack_b(const GemmArgs& g, const BT* b, int64_t k0, int64_t kc, int64_t nr, int64_t p0, int64_t p1, int64_t s0, int64_t s1, float* out) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t p = p0; p < p1; ++p) {
    float* dst = out + p * kc * nr;
    const int64_t j0 = p * nr, cols = std::min(nr, g.n - j0);
    if (!g.trans_b && cols == nr) {
      // Full panels p..q-1 side by side: walk B row by row across all of them, so the reads
      // are one contiguous stretch per row (prefetch-friendly) rather than 64 bytes lda apart.
      int64_t q = p + 1;
      while (q < p1 && (q + 1) * nr <= g.n) ++q;
      for (int64_t k = s0; k < s1; ++k) {
        const BT* src = b + b_row(g, k0 + k) * g.ldb + j0;
        float* row = dst + k * nr;
        for (int64_t s = 0; s < q - p; ++s, src += nr, row += kc * nr) {  // one panel row is two vectors
          hn::StoreU(load_f32(d, src), d, row);
          hn::StoreU(load_f32(d, src + N), d, row + N);
        }
      }
      p = q - 1;
    } else if (!g.trans_b) {
      for (int64_t k = s0; k < s1; ++k) {
        const BT* src = b + b_row(g, k0 + k) * g.ldb + j0;
        for (int64_t j = 0; j < nr; ++j) dst[k * nr + j] = j < cols ? to_f32(src[j]) : 0.0f;
      }
    } else {
      // Bᵀ stored row-major: column j of the panel is a contiguous row of b.
      const BT* src[2 * hn::MaxLanes(hn::ScalableTag<float>())];  // nr = 2 vectors
      for (int64_t j = 0; j < nr; ++j) src[j] = j < cols ? b + (j0 + j) * g.ldb + k0 : nullptr;
      transpose_into_panel(src, kc, nr, cols, dst);
    }
  }
}

// Quantised Bᵀ (GemmArgs::b_quant): each of the panel's rows of b is dequantised over
// [k0, k0 + kc) (see dequantize_span) and transposed like f32 rows.
void pack_b_quantized(const GemmArgs& g, int64_t k0, int64_t kc, int64_t nr, int64_t p0, int64_t p1, float* out) {
  thread_local std::vector<float> rows, scratch;
  rows.resize(static_cast<size_t>(nr * kc));
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t j0 = p * nr, cols = std::min(nr, g.n - j0);
    const float* src[2 * hn::MaxLanes(hn::ScalableTag<float>())];
    for (int64_t j = 0; j < nr; ++j) {
      src[j] = nullptr;
      if (j >= cols) continue;
      if (is_interleaved(g.b_quant_type)) {
        // Rows interleaved by 8 (only with a transposed A: the integer path takes the others):
        // the span's blocks gathered into the plain layout, then decoded as a plain row.
        thread_local std::vector<uint8_t> blocks;
        const DType base = x8_base(g.b_quant_type);
        const int64_t per_block = dtype_block_values(base), first = k0 / per_block, last = (k0 + kc + per_block - 1) / per_block;
        blocks.resize(static_cast<size_t>((last - first) * quant_block_bytes(base)));
        for (int64_t b = first; b < last; ++b) x8_block(base, g.b_quant, j0 + j, g.ldb, b, blocks.data() + (b - first) * quant_block_bytes(base));
        dequantize_span(base, blocks.data(), k0 - first * per_block, kc, rows.data() + j * kc, scratch);
      } else {
        const uint8_t* row = g.b_quant + dtype_bytes(g.b_quant_type, (j0 + j) * g.ldb);
        dequantize_span(g.b_quant_type, row, k0, kc, rows.data() + j * kc, scratch);
      }
      src[j] = rows.data() + j * kc;
    }
    transpose_into_panel(src, kc, nr, cols, out + p * kc * nr);
  }
}

// An untransposed B is packed in slices of its rows across all panels rather than in groups of
// panels: each task then reads one contiguous stretch of B (whole rows, one after another) where
// a group of panels read a short piece of every row, ldb apart, and spent more time waiting on
// the reads than the transposed B's packing. Not with bf16 arithmetic, whose rewrite of a panel
// needs all its rows.
bool packs_b_by_rows(const GemmArgs& g) { return !g.trans_b && !g.b_quant && !g.bf16_math; }

void pack_b_any(const GemmArgs& g, int64_t k0, int64_t kc, int64_t nr, int64_t p0, int64_t p1, int64_t s0, int64_t s1, float* out) {
  SMELT_ASSERT((s0 == 0 && s1 == kc) || packs_b_by_rows(g), "gemm: only an untransposed B is packed a slice of rows at a time");
  if (g.b_quant) pack_b_quantized(g, k0, kc, nr, p0, p1, out);
  else if (g.b_bf16) pack_b(g, g.b_bf16, k0, kc, nr, p0, p1, s0, s1, out);
  else pack_b(g, g.b, k0, kc, nr, p0, p1, s0, s1, out);
}

// pack_a's layout (below) from a transposed A.
// Aᵀ stored row-major [K, M]: row k holds the MR values of every panel side by side. Rows are
// walked once each (k outer), each copied into all the panels, instead of panel by panel down
// rows lda apart (which touched each line of Aᵀ up to three times, a panel's worth of k apart).
void pack_a_transposed(const GemmArgs& g, int64_t i0, int64_t mc, int64_t k0, int64_t kc, float* HWY_RESTRICT out) {
  const int64_t full = mc / kMR, panel = kMR * kc;  // panels with all MR rows; floats per panel
  for (int64_t k = 0; k < kc; ++k) {
    const float* src = g.a + (k0 + k) * g.lda + i0;
    float* dst = out + k * kMR;
    int64_t q = 0;
#if HWY_TARGET != HWY_SCALAR
    // Whole-vector copies of 8 or 16 floats: those past MR land in this panel's next k, which
    // overwrites them (the panel's last k is copied exactly, so nothing lands in the next panel).
    constexpr size_t kCopy = kMR <= 8 ? 8 : 16;
    const hn::CappedTag<float, kCopy> dc;
    if (hn::Lanes(dc) == kCopy && k + 1 < kc) {
      for (; q < full && i0 + q * kMR + static_cast<int64_t>(kCopy) <= g.m; ++q) hn::StoreU(hn::LoadU(dc, src + q * kMR), dc, dst + q * panel);
    }
#endif
    for (; q < full; ++q) std::memcpy(dst + q * panel, src + q * kMR, kMR * sizeof(float));
    if (full * kMR < mc) {  // the last panel's rows, zero padded
      const int64_t rows = mc - full * kMR;
      for (int64_t r = 0; r < kMR; ++r) dst[full * panel + r] = r < rows ? src[full * kMR + r] : 0.0f;
    }
  }
}

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
// One full 12-row micro-panel of an untransposed A over [k0, k0 + kc) on AVX-512: 16 k of the
// 12 rows (one cache line of each) turned by the 16 × 16 register transpose (four rows zero)
// into 16 columns, each stored as 16 floats whose last four the next column's store overwrites:
// 12 whole-line loads and 16 stores per 192 values, against 24 half-line loads and 48 quarter-
// line stores in 4-row groups as before, which took 3.6 % of a 1024³ product (this: 2.2 %).
void pack_a_panel_12(const GemmArgs& g, int64_t r0, int64_t k0, int64_t kc, float* HWY_RESTRICT dst) {
  static_assert(kMR == 12);
  const float* src[12];
#pragma GCC unroll 12
  for (int r = 0; r < 12; ++r) src[r] = g.a + a_row(g, r0 + r) * g.lda + k0;
  int64_t k = 0;
  for (; k + 16 <= kc; k += 16) {
    __m512 v[16];
#pragma GCC unroll 12
    for (int r = 0; r < 12; ++r) {
      hwy::Prefetch(src[r] + k + 64);
      v[r] = _mm512_loadu_ps(src[r] + k);
    }
#pragma GCC unroll 4
    for (int r = 12; r < 16; ++r) v[r] = _mm512_setzero_ps();
    transpose16x16(v);
    float* out = dst + k * kMR;
#pragma GCC unroll 15
    for (int t = 0; t < 15; ++t) _mm512_storeu_ps(out + t * kMR, v[t]);
    _mm512_mask_storeu_ps(out + 15 * kMR, 0x0fff, v[15]);  // not past the panel's end
  }
  for (; k < kc; ++k)
    for (int r = 0; r < 12; ++r) dst[k * kMR + r] = src[r][k];
}
#else
// One full 6-row micro-panel of an untransposed A over [k0, k0 + kc) (AVX2 and narrower).
void pack_a_panel_6(const GemmArgs& g, int64_t r0, int64_t k0, int64_t kc, float* HWY_RESTRICT dst) {
  static_assert(kMR == 6);
  // k outer, so the six values of one k are written side by side.
  const float *s0 = g.a + a_row(g, r0) * g.lda + k0, *s1 = g.a + a_row(g, r0 + 1) * g.lda + k0, *s2 = g.a + a_row(g, r0 + 2) * g.lda + k0;
  const float *s3 = g.a + a_row(g, r0 + 3) * g.lda + k0, *s4 = g.a + a_row(g, r0 + 4) * g.lda + k0, *s5 = g.a + a_row(g, r0 + 5) * g.lda + k0;
  int64_t k = 0;
#if HWY_TARGET != HWY_SCALAR
  const hn::CappedTag<float, 8> d8;
  if (hn::Lanes(d8) == 8) {
    // 8 k at a time, the six rows turned into eight columns of six in registers: rows paired
    // by 32-bit interleaves (t), pairs of pairs by 64-bit interleaves (u), and each k's column
    // assembled from 128-bit halves as eight floats whose last two the next k's store
    // overwrites. (A full 8 × 8 transpose with two zero rows needed more registers than AVX2
    // has, and its spills were a third of the packing time.)
    const hn::Repartition<double, decltype(d8)> dd;
    for (; k + 8 <= kc; k += 8, dst += 8 * kMR) {
      const auto a0 = hn::LoadU(d8, s0 + k), a1 = hn::LoadU(d8, s1 + k), a2 = hn::LoadU(d8, s2 + k);
      const auto a3 = hn::LoadU(d8, s3 + k), a4 = hn::LoadU(d8, s4 + k), a5 = hn::LoadU(d8, s5 + k);
      // t0 = rows 0,1 at k0 k1 | k4 k5; t1 the same at k2 k3 | k6 k7; t2, t3 rows 2,3; t4, t5 rows 4,5.
      const auto t0 = hn::BitCast(dd, hn::InterleaveLower(d8, a0, a1)), t1 = hn::BitCast(dd, hn::InterleaveUpper(d8, a0, a1));
      const auto t2 = hn::BitCast(dd, hn::InterleaveLower(d8, a2, a3)), t3 = hn::BitCast(dd, hn::InterleaveUpper(d8, a2, a3));
      const auto t4 = hn::BitCast(dd, hn::InterleaveLower(d8, a4, a5)), t5 = hn::BitCast(dd, hn::InterleaveUpper(d8, a4, a5));
      // u0 = rows 0-3 at k0 | k4, u1 at k1 | k5, u2 at k2 | k6, u3 at k3 | k7.
      const auto u0 = hn::InterleaveLower(dd, t0, t2), u1 = hn::InterleaveUpper(dd, t0, t2);
      const auto u2 = hn::InterleaveLower(dd, t1, t3), u3 = hn::InterleaveUpper(dd, t1, t3);
      const auto t4s = hn::Shuffle01(t4), t5s = hn::Shuffle01(t5);  // rows 4,5 of the odd k first
      auto column = [&](int t, decltype(u0) v) { hn::StoreU(hn::BitCast(d8, v), d8, dst + t * kMR); };
      column(0, hn::ConcatLowerLower(dd, t4, u0));
      column(1, hn::ConcatLowerLower(dd, t4s, u1));
      column(2, hn::ConcatLowerLower(dd, t5, u2));
      column(3, hn::ConcatLowerLower(dd, t5s, u3));
      column(4, hn::ConcatUpperUpper(dd, t4, u0));
      column(5, hn::ConcatUpperUpper(dd, t4s, u1));
      column(6, hn::ConcatUpperUpper(dd, t5, u2));
      HWY_ALIGN float last[8];
      hn::Store(hn::BitCast(d8, hn::ConcatUpperUpper(dd, t5s, u3)), d8, last);
      std::memcpy(dst + 7 * kMR, last, kMR * sizeof(float));  // not past this panel's end
    }
  }
#endif
  for (; k < kc; ++k, dst += kMR) {
    dst[0] = s0[k]; dst[1] = s1[k]; dst[2] = s2[k];
    dst[3] = s3[k]; dst[4] = s4[k]; dst[5] = s5[k];
  }
}
#endif

// Packs rows [i0, i0 + mc) of op(A) over K block [k0, k0 + kc) into MR-row micro-panels: panel q
// holds, for each k, the MR values of rows i0 + q·MR ... (zero past the last row), so the
// micro-kernel reads one contiguous stream. Reading A in place instead touches MR rows lda apart:
// when lda is a multiple of 4 KiB (K = 1024, 4096) they all fall in one L1 set and evict the B
// panel, and a transposed A would be read across rows.
void pack_a(const GemmArgs& g, int64_t i0, int64_t mc, int64_t k0, int64_t kc, float* HWY_RESTRICT out) {
  if (g.trans_a) {
    pack_a_transposed(g, i0, mc, k0, kc, out);
    return;
  }
  for (int64_t q = 0; q * kMR < mc; ++q) {
    float* dst = out + q * kMR * kc;
    const int64_t r0 = i0 + q * kMR, rows = std::min(kMR, i0 + mc - r0);
    if (rows < kMR) {
      for (int64_t r = 0; r < kMR; ++r)
        for (int64_t k = 0; k < kc; ++k) dst[k * kMR + r] = r < rows ? g.a[a_row(g, r0 + r) * g.lda + k0 + k] : 0.0f;
      continue;
    }
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
    pack_a_panel_12(g, r0, k0, kc, dst);
#else
    pack_a_panel_6(g, r0, k0, kc, dst);
#endif
  }
}

// bf16 math (GemmArgs::bf16_math) on packed panels, in place. A panel is kc rows of `width`
// floats (A: one k per row, MR values; B: one k per row, NR columns).
//
// Where the CPU has VDPBF16PS (AVX-512 targets): row pairs (2p, 2p + 1) become one row of 32-bit
// words, the low half of word j the bf16 of x[2p][j] and the high half that of x[2p + 1][j], as
// the instruction pairs its operands (a row past kc is zero). Rounding to nearest even is done
// on the integer bits (+0x7fff plus the lowest kept bit; a NaN whose payload lies only in the
// dropped bits can round to infinity, still non-finite). Row pair p is written over words
// [p·width, (p + 1)·width), which lie before the rows it reads (2p·width onwards) once p ≥ 1,
// and pair 0 reads both its rows before writing: in place is safe.
constexpr bool kBf16Pairs = kMR == kBf16MicroRows && HWY_TARGET != HWY_SCALAR;

template <class D>
void pack_pairs_bf16(D d, float* panel, int64_t kc, int64_t width) {
  const hn::RebindToUnsigned<D> du;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  uint32_t* out = reinterpret_cast<uint32_t*>(panel);
  for (int64_t p = 0; p < (kc + 1) / 2; ++p)
    for (int64_t j = 0; j < width; j += N) {
      const auto lo = hn::ShiftRight<16>(rounded_bf16_bits(d, panel + 2 * p * width + j));
      const auto hi = 2 * p + 1 < kc ? hn::And(rounded_bf16_bits(d, panel + (2 * p + 1) * width + j), hn::Set(du, 0xffff0000u)) : hn::Zero(du);
      hn::StoreU(hn::Or(lo, hi), du, out + p * width + j);
    }
}

void pack_pairs_bf16(float* panel, int64_t kc, int64_t width) {
  // B panels are whole vectors wide; A's are MR = 12 values, three 4-lane vectors.
  const hn::ScalableTag<float> d;
  if (width % static_cast<int64_t>(hn::Lanes(d)) == 0) return pack_pairs_bf16(d, panel, kc, width);
  const hn::CappedTag<float, 4> d4;
  SMELT_ASSERT(width % static_cast<int64_t>(hn::Lanes(d4)) == 0, "gemm: bf16 pairs need whole vectors per panel row");
  pack_pairs_bf16(d4, panel, kc, width);
}

// Where it has not: the values are rounded to bf16 in place (kept as f32) and the f32 kernel
// runs on them, so the products are the same and only their summation order differs.
void round_panel_to_bf16(float* panel, int64_t count) {
  const hn::ScalableTag<float> d;
  const hn::RebindToUnsigned<decltype(d)> du;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + N <= count; i += N) hn::StoreU(hn::BitCast(d, hn::And(rounded_bf16_bits(d, panel + i), hn::Set(du, 0xffff0000u))), d, panel + i);
  for (; i < count; ++i) panel[i] = bf16_to_f32(f32_to_bf16(panel[i]));
}

// Turns freshly packed panels (`count` panels of kc rows × width) into what the bf16 kernels read.
void panels_to_bf16(float* panels, int64_t count, int64_t kc, int64_t width, bool pairs) {
  for (int64_t q = 0; q < count; ++q) {
    float* panel = panels + q * kc * width;
    if (pairs) pack_pairs_bf16(panel, kc, width);
    else round_panel_to_bf16(panel, kc * width);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace smelt
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
