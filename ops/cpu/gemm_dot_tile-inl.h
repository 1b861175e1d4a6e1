// The dot path's register tiles, per Highway target (included by gemm_dot.cc inside its
// foreach_target loop; the guard below is Highway's per-target include-guard idiom): products
// of a few dozen rows against a transposed B (a prompt's tokens times a weight [out, in]) as
// dot products along k, both operands read in place. The packed GEMM would first transpose the
// whole weight into column panels: at 64 rows that copy took as long as the arithmetic
// (prefilling 64 tokens of SmolLM2 in f32: 23 % of the time in transposing, 30 % in FMAs).
//
// A tile is R rows of A × 4 rows of B: 4·R accumulators, R A vectors and one B vector in
// registers (AVX-512's 32: R = 6; 16 registers: R = 3). Its 4·R dot products are summed across
// lanes four at a time, one output per lane of a 4-float vector.
#if defined(SMELT_OPS_CPU_GEMM_DOT_TILE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SMELT_OPS_CPU_GEMM_DOT_TILE_INL_H_
#undef SMELT_OPS_CPU_GEMM_DOT_TILE_INL_H_
#else
#define SMELT_OPS_CPU_GEMM_DOT_TILE_INL_H_
#endif

#include <algorithm>
#include <cstdint>

#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/gemm_operands-inl.h"

HWY_BEFORE_NAMESPACE();
namespace smelt {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The tiles' A: g's own rows (f32, through g.a_rows) or a copy of them rounded to bf16 (rows in
// order, for bf16 arithmetic).
template <typename AT>
struct TileA {
  const AT* a;
  int64_t lda;
  const int64_t* rows;  // row i of the product is row rows[i] of a; nullptr: row i
  const AT* row(int64_t i) const { return a + (rows ? rows[i] : i) * lda; }
};

// Whether bf16 tiles may take the VDPBF16PS kernel (gemm_bf16.h) where the CPU has it: on the
// AVX-512 targets only, so that a lower target chosen to compare (`--simd AVX2`) runs its own.
constexpr bool kTilesInVdpbf16ps = HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL;

#if HWY_TARGET != HWY_SCALAR
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
constexpr int kTileRows = 6;
#else
constexpr int kTileRows = 3;
#endif
constexpr int kTileCols = 4;

// The four 128-bit-block sums of v, added: a 4-float vector.
template <class D>
HWY_INLINE hn::Vec<hn::CappedTag<float, 4>> add_blocks(D d, hn::Vec<D> v) {
  if constexpr (hn::MaxLanes(D()) > 4) {
    const hn::Half<D> dh;
    return add_blocks(dh, hn::Add(hn::LowerHalf(dh, v), hn::UpperHalf(dh, v)));
  } else {
    (void)d;
    return v;
  }
}

// (Σ lanes of v[0], ..., Σ lanes of v[3]) as one 4-float vector: pairs interleaved and added
// (a's and b's half sums side by side), then the pairs of pairs, then the 128-bit blocks.
template <class D>
HWY_INLINE hn::Vec<hn::CappedTag<float, 4>> sum_lanes_of_4(D d, const hn::Vec<D> v[4]) {
  const hn::Repartition<double, D> dd;
  const auto ab = hn::BitCast(dd, hn::Add(hn::InterleaveLower(d, v[0], v[1]), hn::InterleaveUpper(d, v[0], v[1])));
  const auto cd = hn::BitCast(dd, hn::Add(hn::InterleaveLower(d, v[2], v[3]), hn::InterleaveUpper(d, v[2], v[3])));
  const auto s = hn::Add(hn::BitCast(d, hn::InterleaveLower(dd, ab, cd)), hn::BitCast(d, hn::InterleaveUpper(dd, ab, cd)));
  return add_blocks(d, s);
}

// C[i0 .. i0 + R, j0 .. j0 + cols) for cols ≤ 4 (a short group repeats its last B row and keeps
// only the first cols sums).
template <int R, typename AT, typename BT>
void dot_tile(const GemmArgs& g, const TileA<AT>& ta, const BT* b, int64_t i0, int64_t j0, int64_t cols, bool prefetch_next) {
  const hn::ScalableTag<float> d;
  const hn::CappedTag<float, 4> d4;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  using V = hn::Vec<decltype(d)>;
  V acc[R][kTileCols];
  const AT* a[R];
  const BT* brow[kTileCols];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    a[i] = ta.row(i0 + i);
#pragma GCC unroll 4
    for (int j = 0; j < kTileCols; ++j) acc[i][j] = hn::Zero(d);
  }
#pragma GCC unroll 4
  for (int j = 0; j < kTileCols; ++j) brow[j] = b + (j0 + std::min<int64_t>(j, cols - 1)) * g.ldb;
  int64_t k = 0;
  for (; k + N <= g.k; k += N) {
    if (prefetch_next) {
#pragma GCC unroll 4
      for (int j = 0; j < kTileCols; ++j) hwy::Prefetch(brow[j] + kTileCols * g.ldb + k);
    }
    V av[R];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) av[i] = load_f32(d, a[i] + k);
#pragma GCC unroll 4
    for (int j = 0; j < kTileCols; ++j) {
      const V bv = load_f32(d, brow[j] + k);
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) acc[i][j] = hn::MulAdd(av[i], bv, acc[i][j]);
    }
  }
  // Unrolled like every loop over the accumulators: a rolled one leaves them in memory.
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    HWY_ALIGN float sums[4];
    hn::Store(sum_lanes_of_4(d, acc[i]), d4, sums);
    float* c = g.c + (i0 + i) * g.ldc + j0;
    for (int64_t j = 0; j < cols; ++j) {
      float sum = sums[j];
      for (int64_t t = k; t < g.k; ++t) sum += to_f32(a[i][t]) * to_f32(brow[j][t]);
      c[j] = g.alpha * sum + (g.beta == 0.0f ? 0.0f : g.beta * c[j]);  // beta 0 ignores NaN garbage in C
    }
  }
}

// Columns [j0, j1) of a tiled product: each group of 4 B rows (a few KiB: stays in L1) against
// every row of A (in L2), so the weights stream from memory once.
template <typename AT, typename BT>
void dot_tile_columns(const GemmArgs& g, const TileA<AT>& a, const BT* b, int64_t j0, int64_t j1) {
  for (int64_t j = j0; j < j1; j += kTileCols) {
    const int64_t cols = std::min<int64_t>(kTileCols, j1 - j);
    int64_t i = 0;
    for (; i + kTileRows <= g.m; i += kTileRows) dot_tile<kTileRows>(g, a, b, i, j, cols, i == 0);
    switch (g.m - i) {
      case 0: break;
      case 1: dot_tile<1>(g, a, b, i, j, cols, i == 0); break;
      case 2: dot_tile<2>(g, a, b, i, j, cols, i == 0); break;
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
      case 3: dot_tile<3>(g, a, b, i, j, cols, i == 0); break;
      case 4: dot_tile<4>(g, a, b, i, j, cols, i == 0); break;
      default: dot_tile<5>(g, a, b, i, j, cols, i == 0); break;
#endif
    }
  }
}
#else
// One lane: plain dot products.
template <typename AT, typename BT>
void dot_tile_columns(const GemmArgs& g, const TileA<AT>& a, const BT* b, int64_t j0, int64_t j1) {
  for (int64_t i = 0; i < g.m; ++i)
    for (int64_t j = j0; j < j1; ++j) {
      float sum = 0.0f;
      for (int64_t t = 0; t < g.k; ++t) sum += to_f32(a.row(i)[t]) * to_f32(b[j * g.ldb + t]);
      float* c = g.c + i * g.ldc + j;
      *c = g.alpha * sum + (g.beta == 0.0f ? 0.0f : g.beta * *c);
    }
}
#endif  // HWY_TARGET != HWY_SCALAR

}  // namespace HWY_NAMESPACE
}  // namespace smelt
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
