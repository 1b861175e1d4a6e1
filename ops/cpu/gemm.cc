// CPU f32 GEMM: C = alpha * op(A) * op(B) + beta * C, with op = identity or transpose read in
// place (no transposed copy is ever made). BLIS-style layering:
//   for each K block (kc):   pack B[kc × N] into NR-wide column panels (shared by all threads)
//     and A[M × kc] into MR-row panels (see pack_a), both in one parallel region;
//     in parallel over (M block × N block) tiles: for each (MR × NR) tile run the
//       register-blocked micro-kernel.
// The micro-kernel keeps an MR × NR block of C in 2·MR vector registers (NR = 2 vectors; MR = 6
// on AVX2's 16 registers, 12 on AVX-512's 32).
// Two shapes skip packing: narrow products (N ≤ 64, or wider with K ≤ 64: attention's per-head
// products) and
// products of at most four rows against a transposed B (decoding), which run as dot products
// (gemm_dot.cc).
// B may be stored as bf16 (GemmArgs::b_bf16); it is widened to f32 when packed or loaded. A
// block-quantised Bᵀ (GemmArgs::b_quant) is dequantised as it is packed; few-row products with
// it take the integer dot path (ops/cpu/quant_dot-inl.h).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/cpu/gemm.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/aligned_allocator.h"
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "ops/cpu/dequant-inl.h"
#include "ops/cpu/gemm_operands-inl.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/gemm_dot.h"
#include "runtime/dtype.h"
#include "runtime/error.h"
#include "runtime/quant.h"
#include "runtime/thread_pool.h"

HWY_BEFORE_NAMESPACE();
namespace smelt {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The micro-kernel's MR × 2-vector block of C: 2·MR accumulators, the two B vectors and a
// broadcast must fit the vector registers (AVX-512's 32: MR = 12; AVX2's 16: MR = 6).
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
constexpr int64_t kMR = 12;
constexpr int64_t kKC = 256;   // K block: an MR×KC A panel and a KC×NR B panel stay in L1
constexpr int64_t kMC = 192;   // M block: the A block (MC×KC) stays in L2 while B panels stream past   // M block: the A block (MC×KC) stays in L2 while B panels stream past
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
  for (int i = 0; i < 8; i += 2) {
    t[i] = hn::InterleaveLower(d, r[i], r[i + 1]);
    t[i + 1] = hn::InterleaveUpper(d, r[i], r[i + 1]);
  }
  V u[8];
  for (int i = 0; i < 8; i += 4)
    for (int j = 0; j < 2; ++j) {
      u[i + 2 * j] = hn::BitCast(d, hn::InterleaveLower(dd, hn::BitCast(dd, t[i + j]), hn::BitCast(dd, t[i + 2 + j])));
      u[i + 2 * j + 1] = hn::BitCast(d, hn::InterleaveUpper(dd, hn::BitCast(dd, t[i + j]), hn::BitCast(dd, t[i + 2 + j])));
    }
  // u[0..3] hold rows 0–3 of columns (0,4) (1,5) (2,6) (3,7) per 128-bit half; u[4..7] rows 4–7.
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
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int g = 0; g < 4; ++g) {
    const __m512d t0 = _mm512_castps_pd(t[4 * g]), t1 = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d t2 = _mm512_castps_pd(t[4 * g + 2]), t3 = _mm512_castps_pd(t[4 * g + 3]);
    u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
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
// first k (nullptr past the last column: zero padding). Transposes in 8-deep slices of k so each
// slice's writes stay within a few cache lines.
template <typename BT>
void transpose_into_panel(const BT* const* src, int64_t kc, int64_t nr, int64_t cols, float* dst) {
  int64_t kk = 0;
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  const hn::ScalableTag<float> d16;
  if (cols == nr && nr % 16 == 0) {
    // 16 columns × 16 k: each load takes a whole cache line of a row of Bᵀ (the 8 × 8 slices
    // below take half a line and come back for the rest).
    for (; kk + 16 <= kc; kk += 16)
      for (int64_t j = 0; j < nr; j += 16) {
        __m512 r[16];
        for (int i = 0; i < 16; ++i) {
          hwy::Prefetch(src[j + i] + kk + 64);
          r[i] = load_f32(d16, src[j + i] + kk).raw;
        }
        transpose16x16(r);
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
        for (int i = 0; i < 8; ++i) {
          // Rows of Bᵀ are far apart and read 32 bytes at a time: too many streams for the
          // hardware prefetcher to follow, so ask for each row's next lines ahead.
          hwy::Prefetch(src[j + i] + kk + 64);
          r[i] = load_f32(d8, src[j + i] + kk);
        }
        transpose8x8(d8, r);
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

// Packs panels [p0, p1) of B[k0:k0+kc, 0:n] (nr columns each) from b (g.b or g.b_bf16): panel p
// holds rows k, each nr floats, zero padded. Runs on one thread; callers spread panels of all
// products over the pool.
template <typename BT>
void pack_b(const GemmArgs& g, const BT* b, int64_t k0, int64_t kc, int64_t nr, int64_t p0, int64_t p1, float* out) {
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
      for (int64_t k = 0; k < kc; ++k) {
        const BT* src = b + b_row(g, k0 + k) * g.ldb + j0;
        float* row = dst + k * nr;
        for (int64_t s = 0; s < q - p; ++s, src += nr, row += kc * nr) {  // one panel row is two vectors
          hn::StoreU(load_f32(d, src), d, row);
          hn::StoreU(load_f32(d, src + N), d, row + N);
        }
      }
      p = q - 1;
    } else if (!g.trans_b) {
      for (int64_t k = 0; k < kc; ++k) {
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

void pack_b_any(const GemmArgs& g, int64_t k0, int64_t kc, int64_t nr, int64_t p0, int64_t p1, float* out) {
  if (g.b_quant) pack_b_quantized(g, k0, kc, nr, p0, p1, out);
  else if (g.b_bf16) pack_b(g, g.b_bf16, k0, kc, nr, p0, p1, out);
  else pack_b(g, g.b, k0, kc, nr, p0, p1, out);
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

// One full micro-panel of an untransposed A (MR rows, MR a multiple of 4) over [k0, k0 + kc):
// each group of 4 rows × 8 k is transposed in registers into 8 columns of 4, stored at their k's
// place in the panel (the 6-row panels of AVX2 have their own transpose below).
void pack_a_panel_by_4(const GemmArgs& g, int64_t r0, int64_t k0, int64_t kc, float* HWY_RESTRICT dst) {
  int64_t k = 0;
#if HWY_TARGET != HWY_SCALAR
  const hn::CappedTag<float, 8> d8;
  const hn::Half<decltype(d8)> d4;
  const hn::Repartition<double, decltype(d8)> dd;
  if (hn::Lanes(d8) == 8) {
    for (int64_t r = 0; r < kMR; r += 4) {
      const float* s0 = g.a + a_row(g, r0 + r) * g.lda + k0;
      const float* s1 = g.a + a_row(g, r0 + r + 1) * g.lda + k0;
      const float* s2 = g.a + a_row(g, r0 + r + 2) * g.lda + k0;
      const float* s3 = g.a + a_row(g, r0 + r + 3) * g.lda + k0;
      for (k = 0; k + 8 <= kc; k += 8) {
        // Short row segments (kc floats) end before the hardware prefetcher has ramped up.
        hwy::Prefetch(s0 + k + 64); hwy::Prefetch(s1 + k + 64); hwy::Prefetch(s2 + k + 64); hwy::Prefetch(s3 + k + 64);
        const auto a0 = hn::LoadU(d8, s0 + k), a1 = hn::LoadU(d8, s1 + k);
        const auto a2 = hn::LoadU(d8, s2 + k), a3 = hn::LoadU(d8, s3 + k);
        // t: rows paired (k0 k1 | k4 k5 and k2 k3 | k6 k7); u: the four rows of k and k + 4.
        const auto t0 = hn::BitCast(dd, hn::InterleaveLower(d8, a0, a1)), t1 = hn::BitCast(dd, hn::InterleaveUpper(d8, a0, a1));
        const auto t2 = hn::BitCast(dd, hn::InterleaveLower(d8, a2, a3)), t3 = hn::BitCast(dd, hn::InterleaveUpper(d8, a2, a3));
        const auto u0 = hn::BitCast(d8, hn::InterleaveLower(dd, t0, t2)), u1 = hn::BitCast(d8, hn::InterleaveUpper(dd, t0, t2));
        const auto u2 = hn::BitCast(d8, hn::InterleaveLower(dd, t1, t3)), u3 = hn::BitCast(d8, hn::InterleaveUpper(dd, t1, t3));
        float* out = dst + k * kMR + r;
        hn::StoreU(hn::LowerHalf(d4, u0), d4, out);
        hn::StoreU(hn::LowerHalf(d4, u1), d4, out + kMR);
        hn::StoreU(hn::LowerHalf(d4, u2), d4, out + 2 * kMR);
        hn::StoreU(hn::LowerHalf(d4, u3), d4, out + 3 * kMR);
        hn::StoreU(hn::UpperHalf(d4, u0), d4, out + 4 * kMR);
        hn::StoreU(hn::UpperHalf(d4, u1), d4, out + 5 * kMR);
        hn::StoreU(hn::UpperHalf(d4, u2), d4, out + 6 * kMR);
        hn::StoreU(hn::UpperHalf(d4, u3), d4, out + 7 * kMR);
      }
    }
  }
#endif
  for (; k < kc; ++k)
    for (int64_t r = 0; r < kMR; ++r) dst[k * kMR + r] = g.a[a_row(g, r0 + r) * g.lda + k0 + k];
}

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
    if constexpr (kMR != 6) {
      pack_a_panel_by_4(g, r0, k0, kc, dst);
      continue;
    }
    // Full panel: k outer, so the six values of one k are written side by side.
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
HWY_INLINE hn::Vec<hn::RebindToUnsigned<D>> rounded_bf16_bits(D d, const float* p) {
  const hn::RebindToUnsigned<D> du;
  const auto u = hn::BitCast(du, hn::LoadU(d, p));
  return hn::Add(u, hn::Add(hn::Set(du, 0x7fffu), hn::And(hn::ShiftRight<16>(u), hn::Set(du, 1u))));
}

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

// acc (MR × 2 vectors) = packed A micro-panel × packed B micro-panel over kc; then
// C += alpha * acc, or C = alpha * acc when `overwrite` (the first K block of a beta = 0
// product: no memset pass). The loops over the block are fully unrolled so the accumulators
// live in registers (a rolled loop kept them on the stack).
template <int R>
void micro_kernel_rows(int64_t kc, const float* HWY_RESTRICT pa, const float* HWY_RESTRICT pb, float* c, int64_t ldc, int64_t rows,
                       int64_t cols, float alpha, bool overwrite) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  using V = hn::Vec<decltype(d)>;
  V acc[R][2];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = hn::Zero(d);
  // C is read back only after kc·MR·2 FMAs: ask for its lines now so the miss overlaps them.
  for (int64_t r = 0; r < rows; ++r) {
    hwy::Prefetch(c + r * ldc);
    hwy::Prefetch(c + r * ldc + cols - 1);
  }
  // Unrolled so the loop's bookkeeping does not take issue slots from the 2·MR FMAs per k.
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k, pa += kMR, pb += 2 * N) {
    const V b0 = hn::LoadU(d, pb), b1 = hn::LoadU(d, pb + N);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const V a = hn::Set(d, pa[r]);
      acc[r][0] = hn::MulAdd(a, b0, acc[r][0]);
      acc[r][1] = hn::MulAdd(a, b1, acc[r][1]);
    }
  }
  const V va = hn::Set(d, alpha);
  if (rows == R && cols == 2 * N) {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      float* row = c + r * ldc;
      if (overwrite) {
        hn::StoreU(hn::Mul(va, acc[r][0]), d, row);
        hn::StoreU(hn::Mul(va, acc[r][1]), d, row + N);
      } else {
        hn::StoreU(hn::MulAdd(va, acc[r][0], hn::LoadU(d, row)), d, row);
        hn::StoreU(hn::MulAdd(va, acc[r][1], hn::LoadU(d, row + N)), d, row + N);
      }
    }
    return;
  }
  // Edge tile: spill the accumulators, then add only the valid part.
  HWY_ALIGN float tile[R * 2 * hn::MaxLanes(d)];
  const int64_t w = 2 * N;
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    hn::Store(acc[r][0], d, tile + r * w);
    hn::Store(acc[r][1], d, tile + r * w + N);
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) c[r * ldc + j] = alpha * tile[r * w + j] + (overwrite ? 0.0f : c[r * ldc + j]);
}

// The last micro-panel of an M block often has few rows (1024 rows are 85 panels of 12 and one
// of 4): computing them as 4 or 8 rows instead of MR spares the FMAs of the zero padding (3 % of
// a 256-row product on AVX-512). The panel keeps its MR-wide layout; the kernel reads the first R.
void micro_kernel(int64_t kc, const float* HWY_RESTRICT pa, const float* HWY_RESTRICT pb, float* c, int64_t ldc, int64_t rows,
                  int64_t cols, float alpha, bool overwrite) {
  if constexpr (kMR == 12) {
    if (rows <= 4) return micro_kernel_rows<4>(kc, pa, pb, c, ldc, rows, cols, alpha, overwrite);
    if (rows <= 8) return micro_kernel_rows<8>(kc, pa, pb, c, ldc, rows, cols, alpha, overwrite);
  }
  micro_kernel_rows<static_cast<int>(kMR)>(kc, pa, pb, c, ldc, rows, cols, alpha, overwrite);
}

// C *= beta. Not needed for beta = 0 when K > 0: the first K block overwrites C.
void scale_c(const GemmArgs& g) {
  if (g.beta == 1.0f || (g.beta == 0.0f && g.k > 0 && g.alpha != 0.0f)) return;
  parallel_for(0, g.m, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* row = g.c + r * g.ldc;
      if (g.beta == 0.0f) std::memset(row, 0, g.n * sizeof(float));  // beta 0 also clears NaN garbage
      else for (int64_t j = 0; j < g.n; ++j) row[j] *= g.beta;
    }
  });
}

// Narrow products (N of at most a few vectors, B rows unit-stride) skip packing: packing A would
// cost as much as the arithmetic (attention's P·V and its gradients have N = head_dim). Each
// task keeps a 3-row × NV-vector block of C in registers and streams A and B directly.
template <int NV>
void narrow_block(const GemmArgs& g, int64_t i0, int64_t rows, int64_t j0) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  using V = decltype(hn::Zero(d));
  // Fully unrolled loops over the block, so the accumulators stay in registers (a rolled loop
  // kept them on the stack: 11 % of a dense training step went to those loads and stores).
  V acc[3][NV];
#pragma GCC unroll 3
  for (int r = 0; r < 3; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = hn::Zero(d);
  // The three A rows (a short block repeats its last row) as pointers stepping by a_step per k,
  // worked out once: per-k index arithmetic and branches had cost as much as the FMAs.
  const int64_t r1 = std::min<int64_t>(1, rows - 1), r2 = std::min<int64_t>(2, rows - 1);
  const int64_t a_step = g.trans_a ? g.lda : 1;
  auto row_start = [&](int64_t i) { return g.trans_a ? g.a + i : g.a + a_row(g, i) * g.lda; };
  const float *pa0 = row_start(i0), *pa1 = row_start(i0 + r1), *pa2 = row_start(i0 + r2);
  for (int64_t k = 0; k < g.k; ++k) {
    const auto a0 = hn::Set(d, pa0[k * a_step]);
    const auto a1 = hn::Set(d, pa1[k * a_step]);
    const auto a2 = hn::Set(d, pa2[k * a_step]);
    const float* brow = g.b + b_row(g, k) * g.ldb + j0;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const auto b = hn::LoadU(d, brow + v * N);
      acc[0][v] = hn::MulAdd(a0, b, acc[0][v]);
      acc[1][v] = hn::MulAdd(a1, b, acc[1][v]);
      acc[2][v] = hn::MulAdd(a2, b, acc[2][v]);
    }
  }
  const auto va = hn::Set(d, g.alpha), vb = hn::Set(d, g.beta);
#pragma GCC unroll 3
  for (int64_t r = 0; r < rows; ++r) {
    float* crow = g.c + (i0 + r) * g.ldc + j0;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      auto out = hn::Mul(va, acc[r][v]);
      if (g.beta != 0.0f) out = hn::MulAdd(vb, hn::LoadU(d, crow + v * N), out);
      hn::StoreU(out, d, crow + v * N);
    }
  }
}

bool narrow_gemm(const GemmArgs& g) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  if (g.trans_b || g.b_bf16 || g.bf16_math || g.n % N != 0 || g.k == 0) return false;
  // Wider products too when M and K are short and B fits in L2 (attention's scores of a query
  // block against Kᵀ, K = head dim): packing would cost as much as the FMAs. With many rows it
  // pays again (4096 × 512 × 64: 116 GFLOP/s here against 169 packed).
  if (g.n > 64 && !(g.m <= 64 && g.k <= 64 && g.k * g.n <= (int64_t{1} << 15))) return false;
  const int64_t row_blocks = (g.m + 2) / 3;
  parallel_for(0, row_blocks, 8, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * 3, rows = std::min<int64_t>(3, g.m - i0);
      for (int64_t j0 = 0; j0 < g.n; j0 += 4 * N) {
        switch (std::min<int64_t>(4, (g.n - j0) / N)) {
          case 1: narrow_block<1>(g, i0, rows, j0); break;
          case 2: narrow_block<2>(g, i0, rows, j0); break;
          case 3: narrow_block<3>(g, i0, rows, j0); break;
          default: narrow_block<4>(g, i0, rows, j0); break;
        }
      }
    }
  });
  return true;
}

// How one product is cut into parallel tasks: M blocks of at most kMC rows × N blocks of panels.
struct Tiling {
  int64_t n_panels = 0, m_blocks = 0, n_blocks = 0;
  int64_t mc = kMC;  // rows per M block: at most kMC, evened out so no block is a thin remainder
  int64_t tasks() const { return m_blocks * n_blocks; }
  int64_t mc_pad() const { return (mc + kMR - 1) / kMR * kMR; }  // an M block's packed rows
  // N block nb covers panels [panel_begin(nb), panel_begin(nb + 1)): sizes differ by at most one.
  int64_t panel_begin(int64_t nb) const { return nb * n_panels / n_blocks; }
};

Tiling make_tiling(const GemmArgs& g, int64_t nr, int64_t target_tasks) {
  Tiling t;
  t.n_panels = (g.n + nr - 1) / nr;
  t.m_blocks = (g.m + kMC - 1) / kMC;
  // Thin remainder blocks stream all of packed B for a few rows (experts' segments are rarely a
  // multiple of kMC): spread the rows evenly over the blocks, in whole micro-panels.
  t.mc = std::min(kMC, ((g.m + t.m_blocks - 1) / t.m_blocks + kMR - 1) / kMR * kMR);
  t.m_blocks = (g.m + t.mc - 1) / t.mc;
  t.n_blocks = (t.n_panels * nr + kNCTile - 1) / kNCTile;
  // Enough tasks to keep every thread busy: short-and-wide products (weight gradients, M = hidden
  // size) split N finer, since A is read in place and costs nothing to share between tasks.
  if (t.tasks() < target_tasks) t.n_blocks = std::min(t.n_panels, (target_tasks + t.m_blocks - 1) / t.m_blocks);
  return t;
}

// One task: the (mb, nb) tile of g over K block [k0, k0 + kc), A and B taken from their packed
// panels (packed_a: this product's M blocks, each mc_pad × kc).
void run_tile(const GemmArgs& g, const Tiling& t, int64_t task, int64_t k0, int64_t kc, const float* packed_a, const float* packed_b,
              int64_t nr, bool pairs) {
  const int64_t mb = task / t.n_blocks, nb = task % t.n_blocks;
  const int64_t i0 = mb * t.mc, mc = std::min(t.mc, g.m - i0);
  const bool overwrite = k0 == 0 && g.beta == 0.0f;
  const float* pa = packed_a + mb * t.mc_pad() * kc;
  const int64_t p_end = t.panel_begin(nb + 1);
  for (int64_t p = t.panel_begin(nb); p < p_end; ++p) {
    const int64_t j0 = p * nr, cols = std::min(nr, g.n - j0);
    for (int64_t r0 = i0; r0 < i0 + mc; r0 += kMR) {
      const int64_t rows = std::min(kMR, g.m - r0);
      if (pairs)
        bf16_micro_kernel_12x32((kc + 1) / 2, reinterpret_cast<const uint32_t*>(pa + (r0 - i0) * kc),
                                reinterpret_cast<const uint32_t*>(packed_b + p * kc * nr), g.c + r0 * g.ldc + j0, g.ldc, rows, cols, g.alpha,
                                overwrite);
      else
        micro_kernel(kc, pa + (r0 - i0) * kc, packed_b + p * kc * nr, g.c + r0 * g.ldc + j0, g.ldc, rows, cols, g.alpha, overwrite);
    }
  }
}

// A and B are packed for a run of K blocks in one parallel region, then every tile runs over
// that whole run in a second one, so its C block stays in cache and the pool meets twice per
// run, not twice per K block. Runs are as long as kPackBudget floats of packed panels allow
// (2 MiB; 8 MiB measured no faster): a weight gradient over many tokens (K = B·T) would
// otherwise pack a transient copy as large as its input (64 MiB for the LM head at 4096 tokens).
constexpr int64_t kPackBudget = 1 << 19;  // floats
// Products packed together in one batch of a grouped call: one K block of each must fit this
// (8 MiB). Fewer products per batch means more parallel regions with a ragged end each: with
// one product per batch the experts' forward fell from 0.96-0.98 to 0.89-0.93 of a dense GEMM.
constexpr int64_t kGroupPackBudget = 4 * kPackBudget;

// The calling thread's packing buffer, at least `floats` long (rounded to keep vectors aligned).
// Kept between calls: a fresh multi-MiB allocation per product would be page-faulted in and
// zeroed by the kernel every time unless malloc keeps freed blocks (runtime/storage.cc asks it
// to, but a GEMM must not depend on that).
float* packing_workspace(int64_t floats) {
  thread_local hwy::AlignedFreeUniquePtr<float[]> buffer;
  thread_local int64_t capacity = 0;
  if (floats > capacity) {
    // At least the grouped budget at once: growing step by step left freed buffers as holes in
    // the heap (+30 MiB peak RSS in the MoE training step).
    capacity = (std::max(floats, kGroupPackBudget + 4096) + 1023) / 1024 * 1024;
    buffer = hwy::AllocateAligned<float>(static_cast<size_t>(capacity));
    SMELT_CHECK(buffer != nullptr, "gemm: out of memory for a ", capacity * 4 >> 20, " MiB packing buffer");
  }
  return buffer.get();
}

// Packed floats per unit of K: the A blocks' rows plus the B panels' columns.
int64_t packed_width(const Tiling& t, int64_t nr) { return t.m_blocks * t.mc_pad() + t.n_panels * nr; }

// Products (each with m, n, k > 0) whose tasks share one pair of parallel regions per run of K.
void run_products(const std::vector<const GemmArgs*>& live, int64_t nr) {
  const int64_t target = std::max<int64_t>(1, 8 * static_cast<int64_t>(num_threads()) / static_cast<int64_t>(live.size()));
  std::vector<Tiling> tilings;
  int64_t max_k = 0, rows_and_cols = 0;  // packed floats per unit of K over all products
  for (const GemmArgs* g : live) {
    tilings.push_back(make_tiling(*g, nr, target));
    rows_and_cols += packed_width(tilings.back(), nr);
    max_k = std::max(max_k, g->k);
  }
  const int64_t run_k = std::max<int64_t>(kKC, kPackBudget / std::max<int64_t>(rows_and_cols, 1) / kKC * kKC);
  constexpr int64_t kPackPanels = 4;  // B panels per packing task
  // bf16 math as VDPBF16PS pairs where this target's micro-kernel shape matches and the CPU has it.
  const bool pairs = kBf16Pairs && 2 * static_cast<int64_t>(hn::Lanes(hn::ScalableTag<float>())) == kBf16MicroCols && cpu_has_bf16_dot();
  for (int64_t k_begin = 0; k_begin < max_k; k_begin += run_k) {
    const int64_t k_end = k_begin + run_k;
    std::vector<int64_t> owner, first_task, first_pack, a_offset, b_offset;  // per product active in this run
    int64_t tasks = 0, packs = 0, a_total = 0, b_total = 0;
    for (size_t i = 0; i < live.size(); ++i) {
      if (k_begin >= live[i]->k) continue;
      const Tiling& t = tilings[i];
      const int64_t span = std::min(k_end, live[i]->k) - k_begin, blocks = (span + kKC - 1) / kKC;
      owner.push_back(static_cast<int64_t>(i));
      first_task.push_back(tasks);
      first_pack.push_back(packs);
      a_offset.push_back(a_total);
      b_offset.push_back(b_total);
      tasks += t.tasks();
      packs += blocks * ((t.n_panels + kPackPanels - 1) / kPackPanels + t.m_blocks);  // per K block: B panel groups, then A blocks
      a_total += t.m_blocks * t.mc_pad() * span;
      b_total += t.n_panels * nr * span;
    }
    first_task.push_back(tasks);
    first_pack.push_back(packs);
    float* const workspace = packing_workspace((a_total + 15) / 16 * 16 + b_total);
    float* const packed_a = workspace;
    float* const packed_b = workspace + (a_total + 15) / 16 * 16;  // B panels start on a cache line
    // K block k0 of product j: its A blocks start at a_offset[j] + (k0 − k_begin)·rows, B panels likewise.
    parallel_tasks(packs, [&](int64_t t) {
      const size_t j = std::upper_bound(first_pack.begin(), first_pack.end(), t) - first_pack.begin() - 1;
      const GemmArgs& g = *live[owner[j]];
      const Tiling& tl = tilings[owner[j]];
      const int64_t b_packs = (tl.n_panels + kPackPanels - 1) / kPackPanels, per_block = b_packs + tl.m_blocks;
      const int64_t u = t - first_pack[j], k0 = k_begin + u / per_block * kKC, v = u % per_block, kc = std::min(kKC, g.k - k0);
      if (v < b_packs) {
        const int64_t p0 = v * kPackPanels, p1 = std::min(tl.n_panels, (v + 1) * kPackPanels);
        float* panels = packed_b + b_offset[j] + (k0 - k_begin) * tl.n_panels * nr;
        pack_b_any(g, k0, kc, nr, p0, p1, panels);
        if (g.bf16_math) panels_to_bf16(panels + p0 * kc * nr, p1 - p0, kc, nr, pairs);
      } else {
        const int64_t mb = v - b_packs, i0 = mb * tl.mc;
        float* block = packed_a + a_offset[j] + (k0 - k_begin) * tl.m_blocks * tl.mc_pad() + mb * tl.mc_pad() * kc;
        pack_a(g, i0, std::min(tl.mc, g.m - i0), k0, kc, block);
        if (g.bf16_math) panels_to_bf16(block, tl.mc_pad() / kMR, kc, kMR, pairs);
      }
    });
    parallel_tasks(tasks, [&](int64_t t) {
      const size_t j = std::upper_bound(first_task.begin(), first_task.end(), t) - first_task.begin() - 1;
      const GemmArgs& g = *live[owner[j]];
      const Tiling& tl = tilings[owner[j]];
      for (int64_t k0 = k_begin; k0 < std::min(k_end, g.k); k0 += kKC)
        run_tile(g, tl, t - first_task[j], k0, std::min(kKC, g.k - k0),
                 packed_a + a_offset[j] + (k0 - k_begin) * tl.m_blocks * tl.mc_pad(),
                 packed_b + b_offset[j] + (k0 - k_begin) * tl.n_panels * nr, nr, g.bf16_math && pairs);
    });
  }
}

// Several independent products share the threads, so small and unequal products (experts'
// segments) keep every core busy. They go in batches whose K blocks fit kGroupPackBudget
// together: packing one K block of all 24 products of an MoE layer's weight gradients at once
// took a 24 MiB buffer.
void GroupedGemmKernel(const GemmArgs* problems, int64_t count) {
  const hn::ScalableTag<float> d;
  const int64_t nr = 2 * static_cast<int64_t>(hn::Lanes(d));
  std::vector<const GemmArgs*> live, dots;
  std::vector<int64_t> width;
  for (int64_t i = 0; i < count; ++i) {
    const GemmArgs& g = problems[i];
    SMELT_ASSERT(!(g.a_rows && g.trans_a) && !(g.b_rows && g.trans_b), "gemm: a row index needs the untransposed operand");
    SMELT_ASSERT((g.b != nullptr) + (g.b_bf16 != nullptr) + (g.b_quant != nullptr) == 1 || g.m * g.n * g.k == 0,
                 "gemm: exactly one of b, b_bf16 and b_quant must be set");
    SMELT_ASSERT(!g.b_quant || (g.trans_b && !g.b_rows && g.k % dtype_block_values(g.b_quant_type) == 0 &&
                                g.ldb % dtype_block_values(g.b_quant_type) == 0),
                 "gemm: a quantised B is transposed, whole blocks along k");
    SMELT_ASSERT(!g.b_quant || !is_interleaved(g.b_quant_type) || g.ldb == g.k, "gemm: rows interleaved by 8 are whole rows of B");
    if (g.m > 0 && g.n > 0 && g.alpha != 0.0f && gemm_takes_dot_path(g)) {
      dots.push_back(&g);  // writes C itself, beta included
      continue;
    }
    scale_c(g);
    if (g.m <= 0 || g.n <= 0 || g.k <= 0 || g.alpha == 0.0f) continue;
    live.push_back(&g);
    width.push_back(packed_width(make_tiling(g, nr, 1), nr));
  }
  cpu_gemm_dot_products(dots.data(), static_cast<int64_t>(dots.size()));
  for (size_t first = 0; first < live.size();) {
    size_t last = first + 1;
    int64_t batch_width = width[first];
    while (last < live.size() && (batch_width + width[last]) * kKC <= kGroupPackBudget) batch_width += width[last++];
    run_products({live.begin() + static_cast<std::ptrdiff_t>(first), live.begin() + static_cast<std::ptrdiff_t>(last)}, nr);
    first = last;
  }
}

void GemmKernel(const GemmArgs& g) {
  if (g.m > 0 && g.alpha != 0.0f && narrow_gemm(g)) return;
  GroupedGemmKernel(&g, 1);
}

}  // namespace HWY_NAMESPACE
}  // namespace smelt
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace smelt {
HWY_EXPORT(GemmKernel);
HWY_EXPORT(GroupedGemmKernel);
void cpu_gemm(const GemmArgs& args) { HWY_DYNAMIC_DISPATCH(GemmKernel)(args); }
void cpu_grouped_gemm(const GemmArgs* problems, int64_t count) { HWY_DYNAMIC_DISPATCH(GroupedGemmKernel)(problems, count); }
}  // namespace smelt
#endif
