// The integer dot path of a GEMM whose B is a block-quantised Bᵀ (GemmArgs::b_quant): decoding's
// few rows of A against weight rows in Q8_0 or Q4_0. A's rows are quantised once per call to
// int8 blocks with an f32 scale each; every (A row, weight row) pair is then a sum over blocks of
// d_w · d_a · Σ q_w q_a, the inner sum in int32 (sign-extended to int16 and multiplied in
// pairs: _mm256_madd_epi16 on AVX2). The weights stream from memory once per call, a quarter
// (Q8_0) or an eighth (Q4_0) of the f32 bytes. Included by gemm_dot.cc inside its
// foreach_target loop.
#if defined(SMELT_OPS_CPU_QUANT_DOT_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SMELT_OPS_CPU_QUANT_DOT_INL_H_
#undef SMELT_OPS_CPU_QUANT_DOT_INL_H_
#else
#define SMELT_OPS_CPU_QUANT_DOT_INL_H_
#endif

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/gemm_operands-inl.h"
#include "runtime/quant.h"

HWY_BEFORE_NAMESPACE();
namespace smelt {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// A's rows (g.m of them, k values each) as int8 blocks: q = round(x / d), d = max|x| / 127 per
// block of 32 (an f32 scale, finer than Q8_0's f16; A is quantised per call, so it costs nothing
// to keep). q holds m·k values, d m·k/32 scales.
inline void quantize_a_rows(const GemmArgs& g, int8_t* q, float* d) {
  const int64_t blocks = g.k / kQuantBlock;
  for (int64_t i = 0; i < g.m; ++i) {
    const float* x = g.a + a_row(g, i) * g.lda;
    for (int64_t b = 0; b < blocks; ++b) {
      const float* xb = x + b * kQuantBlock;
      float amax = 0.0f;
      for (int64_t j = 0; j < kQuantBlock; ++j) amax = std::max(amax, std::fabs(xb[j]));
      const float scale = amax / 127.0f, inverse = scale != 0.0f ? 1.0f / scale : 0.0f;
      d[i * blocks + b] = scale;
      for (int64_t j = 0; j < kQuantBlock; ++j) q[i * g.k + b * kQuantBlock + j] = static_cast<int8_t>(std::lrintf(xb[j] * inverse));
    }
  }
}

// The tags of the int8 → int16 → int32 product: 16-bit lanes in at most 256 bits, so one block's
// 32 values are two (AVX2, AVX-512) or four (SSE4) steps.
struct DotTags {
  hn::CappedTag<int16_t, 16> i16;
  hn::Rebind<int8_t, decltype(i16)> i8;
  hn::Rebind<uint8_t, decltype(i16)> u8;
  hn::Repartition<int32_t, decltype(i16)> i32;
  hn::Rebind<float, decltype(i32)> f32;
};

// out[i][j] = Σ over blocks of weight row w[j] (Q8_0 or Q4_0) · A row i, for M rows of A and J
// weight rows: each A chunk is loaded once for the J rows. Every loop over i, j and the chunks is
// unrolled so the accumulators stay in registers (rolled, they live on the stack).
template <int M, int J, DType W>
HWY_INLINE void quant_dot_rows(const uint8_t* const* w, const int8_t* aq, const float* ad, int64_t k, float (*out)[J]) {
  const DotTags t;
  const int64_t L = static_cast<int64_t>(hn::Lanes(t.i16));
  const int64_t blocks = k / kQuantBlock;
  constexpr int64_t kBlockBytes = W == DType::Q8_0 ? 34 : 18;
  const float* f16 = f16_to_f32_table();
  hn::Vec<decltype(t.f32)> acc[M][J];
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < J; ++j) acc[i][j] = hn::Zero(t.f32);
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* block[J];
#pragma GCC unroll 4
    for (int j = 0; j < J; ++j) {
      block[j] = w[j] + b * kBlockBytes;
      // Rows are a few hundred bytes, too short for the hardware prefetcher to get ahead: fetch
      // the same block of the next J rows (the rows of a task are contiguous).
      hwy::Prefetch(block[j] + J * blocks * kBlockBytes);
    }
    hn::Vec<decltype(t.i32)> s0[M][J], s1[M][J];
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < J; ++j) s0[i][j] = s1[i][j] = hn::Zero(t.i32);
    const int8_t* a0 = aq + b * kQuantBlock;
    if constexpr (W == DType::Q8_0) {
#pragma GCC unroll 4
      for (int64_t c = 0; c < kQuantBlock; c += L) {
        hn::Vec<decltype(t.i16)> av[M];
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) av[i] = hn::PromoteTo(t.i16, hn::LoadU(t.i8, a0 + i * k + c));
#pragma GCC unroll 4
        for (int j = 0; j < J; ++j) {
          const auto wv = hn::PromoteTo(t.i16, hn::LoadU(t.i8, reinterpret_cast<const int8_t*>(block[j] + 2) + c));
#pragma GCC unroll 4
          for (int i = 0; i < M; ++i) s0[i][j] = hn::ReorderWidenMulAccumulate(t.i32, wv, av[i], s0[i][j], s1[i][j]);
        }
      }
    } else {  // Q4_0: low nibbles are values 0..15, high nibbles 16..31, each minus 8
      const auto eight = hn::Set(t.i16, 8);
#pragma GCC unroll 4
      for (int64_t c = 0; c < kQuantBlock / 2; c += L) {
        hn::Vec<decltype(t.i16)> alo[M], ahi[M];
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) {
          alo[i] = hn::PromoteTo(t.i16, hn::LoadU(t.i8, a0 + i * k + c));
          ahi[i] = hn::PromoteTo(t.i16, hn::LoadU(t.i8, a0 + i * k + 16 + c));
        }
#pragma GCC unroll 4
        for (int j = 0; j < J; ++j) {
          const auto v = hn::LoadU(t.u8, block[j] + 2 + c);
          const auto lo = hn::Sub(hn::PromoteTo(t.i16, hn::And(v, hn::Set(t.u8, 0x0F))), eight);
          const auto hi = hn::Sub(hn::PromoteTo(t.i16, hn::ShiftRight<4>(v)), eight);
#pragma GCC unroll 4
          for (int i = 0; i < M; ++i) {
            s0[i][j] = hn::ReorderWidenMulAccumulate(t.i32, lo, alo[i], s0[i][j], s1[i][j]);
            s0[i][j] = hn::ReorderWidenMulAccumulate(t.i32, hi, ahi[i], s0[i][j], s1[i][j]);
          }
        }
      }
    }
#pragma GCC unroll 4
    for (int j = 0; j < J; ++j) {
      const float dw = f16[block[j][0] | (block[j][1] << 8)];
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i)
        acc[i][j] = hn::MulAdd(hn::ConvertTo(t.f32, hn::RearrangeToOddPlusEven(s0[i][j], s1[i][j])), hn::Set(t.f32, dw * ad[i * blocks + b]),
                               acc[i][j]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < J; ++j) out[i][j] = hn::GetLane(hn::SumOfLanes(t.f32, acc[i][j]));
}

// Columns [j0, j1) of a quantised dot-path product, A already quantised (aq, ad).
template <int M, DType W>
void quant_dot_columns(const GemmArgs& g, const int8_t* aq, const float* ad, int64_t j0, int64_t j1) {
  constexpr int J = M == 1 ? 4 : M == 2 ? 2 : 1;  // M·J accumulators and sums in registers
  auto run = [&](auto width, int64_t j) {
    constexpr int N = decltype(width)::value;
    const uint8_t* rows[N];
    for (int r = 0; r < N; ++r) rows[r] = g.b_quant + dtype_bytes(W, (j + r) * g.ldb);
    float sums[M][N];
    quant_dot_rows<M, N, W>(rows, aq, ad, g.k, sums);
    for (int i = 0; i < M; ++i)
      for (int r = 0; r < N; ++r) {
        float* c = g.c + i * g.ldc + j + r;
        *c = g.alpha * sums[i][r] + (g.beta == 0.0f ? 0.0f : g.beta * *c);  // beta 0 ignores NaN garbage in C
      }
  };
  for (; j0 + J <= j1; j0 += J) run(std::integral_constant<int, J>(), j0);
  for (; j0 < j1; ++j0) run(std::integral_constant<int, 1>(), j0);
}

template <DType W>
void quant_dot_task_of(const GemmArgs& g, const int8_t* aq, const float* ad, int64_t j0, int64_t j1) {
  switch (g.m) {
    case 1: quant_dot_columns<1, W>(g, aq, ad, j0, j1); break;
    case 2: quant_dot_columns<2, W>(g, aq, ad, j0, j1); break;
    case 3: quant_dot_columns<3, W>(g, aq, ad, j0, j1); break;
    default: quant_dot_columns<4, W>(g, aq, ad, j0, j1); break;
  }
}

inline void quant_dot_task(const GemmArgs& g, const int8_t* aq, const float* ad, int64_t j0, int64_t j1) {
  if (g.b_quant_type == DType::Q8_0) quant_dot_task_of<DType::Q8_0>(g, aq, ad, j0, j1);
  else quant_dot_task_of<DType::Q4_0>(g, aq, ad, j0, j1);
}

}  // namespace HWY_NAMESPACE
}  // namespace smelt
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
