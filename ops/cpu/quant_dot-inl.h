// The integer dot path of a GEMM whose B is a block-quantised Bᵀ (GemmArgs::b_quant): decoding's
// few rows of A against weight rows in Q8_0 or Q4_0. A's rows are quantised once per call to
// int8 blocks with an f32 scale each; every (A row, weight row) pair is then a sum over blocks of
// d_w · d_a · Σ q_w q_a, the inner sum in int32 (vpmaddubsw + vpmaddwd on x86, int16 products
// elsewhere). The weights stream from memory once per call, a quarter
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

// Rows [i0, i1) of A (k values each) as int8 blocks: q = round(x / d), d = max|x| / 127 per span
// of `span` blocks of 32 (an f32 scale, finer than Q8_0's f16; A is quantised per call, so it
// costs nothing to keep). q holds m·k values, d m·k/32 scales (a span's blocks repeat its scale).
// Q4_K products take spans of a whole super-block (8 blocks, as llama.cpp's Q8_K): its
// sub-blocks' integer sums can then be weighted by their integer scales and added before any
// float arithmetic. Each block's Σq goes to isums and d·Σq to sums, summed as it is stored: the
// −8 offset of Q4_0 rows interleaved by 8 and Q4_K's mins need them. A NaN or an infinity in a
// span makes its scale NaN, and so the products NaN, as the f32 product's would be (Max drops a
// NaN, which was then quantised as a finite value and vanished).
inline void quantize_a_rows(const GemmArgs& g, int64_t i0, int64_t i1, int64_t span, int8_t* q, float* d, int32_t* isums, float* sums) {
  const hn::CappedTag<float, 8> df;
  const hn::Rebind<int8_t, decltype(df)> d8;
  const hn::Rebind<int32_t, decltype(df)> di;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df)), blocks = g.k / kQuantBlock, width = span * kQuantBlock;
  for (int64_t i = i0; i < i1; ++i) {
    const float* x = g.a + a_row(g, i) * g.lda;
    for (int64_t b = 0; b < blocks; b += span) {
      const float* xb = x + b * kQuantBlock;
      auto amax = hn::Zero(df), poison = hn::Zero(df);  // poison: 0, or NaN where x is not finite
      for (int64_t j = 0; j < width; j += L) {
        const auto v = hn::LoadU(df, xb + j);
        amax = hn::Max(amax, hn::Abs(v));
        poison = hn::MulAdd(v, hn::Zero(df), poison);
      }
      const float scale = hn::GetLane(hn::MaxOfLanes(df, amax)) / 127.0f + hn::GetLane(hn::SumOfLanes(df, poison));
      const auto inverse = hn::Set(df, scale != 0.0f ? 1.0f / scale : 0.0f);
      for (int64_t s = 0; s < span; ++s) {
        const int64_t block = i * blocks + b + s;
        auto isum = hn::Zero(di);
        for (int64_t j = 0; j < kQuantBlock; j += L) {
          // Rounded to nearest, ties to even (lrintf's rounding under the default mode).
          const auto q8 = hn::DemoteTo(d8, hn::NearestInt(hn::Mul(hn::LoadU(df, xb + s * kQuantBlock + j), inverse)));
          hn::StoreU(q8, d8, q + block * kQuantBlock + j);
          isum = hn::Add(isum, hn::PromoteTo(di, q8));  // the stored values: a NaN's saturated one too
        }
        const int32_t total = hn::GetLane(hn::SumOfLanes(di, isum));
        d[block] = scale;
        isums[block] = total;
        sums[block] = scale * static_cast<float>(total);
      }
    }
  }
}

// The tags of a block's int32 partial sums: 16-bit lanes in at most 256 bits, so one block's 32
// values are two (AVX2, AVX-512) or four (SSE4) int16 steps on the widening path.
struct DotTags {
  hn::CappedTag<int16_t, 16> i16;
  hn::Rebind<int8_t, decltype(i16)> i8;
  hn::Rebind<uint8_t, decltype(i16)> u8;
  hn::Repartition<int32_t, decltype(i16)> i32;
  hn::Rebind<float, decltype(i32)> f32;
};
using I32 = hn::Vec<decltype(DotTags{}.i32)>;

// sums[i][j] = int32 lanes whose total is Σ q_w q_a over one block of weight row j (its block
// bytes at block[j]) and A row i (its block at a + i·k). Two implementations, same result.
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_SSSE3
// x86 from SSSE3 on: vpmaddubsw multiplies unsigned by signed bytes and adds pairs into int16,
// vpmaddwd adds those pairs into int32: 32 products in two instructions (AVX2; four on SSE).
// Q8_0 weights are signed, so the sign moves to A (|w| · sign(w)·a, as llama.cpp does); Q4_0's
// nibbles are unsigned 0..15, so w·a is taken as is and 8·a subtracted (the value is nibble − 8).
// No pair can saturate int16: 2·128·127 and 2·15·127 are below 32767.
#if HWY_TARGET <= HWY_AVX2
using Bytes = __m256i;  // a block's 32 bytes
HWY_INLINE Bytes load_block(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
HWY_INLINE Bytes q4_nibbles(const uint8_t* p) {  // 16 bytes → values 0..15 in block order
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0F));
}
HWY_INLINE Bytes abs_bytes(Bytes w) { return _mm256_sign_epi8(w, w); }
HWY_INLINE Bytes sign_of(Bytes a, Bytes w) { return _mm256_sign_epi8(a, w); }
HWY_INLINE Bytes eights() { return _mm256_set1_epi8(8); }
using Pairs = __m256i;  // int16 sums of adjacent byte products
HWY_INLINE Pairs pairs_i16(Bytes u, Bytes s) { return _mm256_maddubs_epi16(u, s); }
HWY_INLINE I32 pairs_i32(Bytes u, Bytes s, Pairs minus) {  // Σ u·s − Σ minus
  return I32{_mm256_madd_epi16(_mm256_sub_epi16(_mm256_maddubs_epi16(u, s), minus), _mm256_set1_epi16(1))};
}
HWY_INLINE I32 pairs_i32(Bytes u, Bytes s) { return I32{_mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))}; }
HWY_INLINE Bytes low_nibbles(const uint8_t* p) { return _mm256_and_si256(load_block(p), _mm256_set1_epi8(0x0F)); }
HWY_INLINE Bytes high_nibbles(const uint8_t* p) {
  return _mm256_and_si256(_mm256_srli_epi16(load_block(p), 4), _mm256_set1_epi8(0x0F));
}
#else
struct Bytes {  // a block's 32 bytes in two SSE registers
  __m128i lo, hi;
};
HWY_INLINE Bytes load_block(const void* p) {
  const auto* v = static_cast<const __m128i*>(p);
  return {_mm_loadu_si128(v), _mm_loadu_si128(v + 1)};
}
HWY_INLINE Bytes q4_nibbles(const uint8_t* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), mask = _mm_set1_epi8(0x0F);
  return {_mm_and_si128(v, mask), _mm_and_si128(_mm_srli_epi16(v, 4), mask)};
}
HWY_INLINE Bytes abs_bytes(Bytes w) { return {_mm_sign_epi8(w.lo, w.lo), _mm_sign_epi8(w.hi, w.hi)}; }
HWY_INLINE Bytes sign_of(Bytes a, Bytes w) { return {_mm_sign_epi8(a.lo, w.lo), _mm_sign_epi8(a.hi, w.hi)}; }
HWY_INLINE Bytes eights() { return {_mm_set1_epi8(8), _mm_set1_epi8(8)}; }
struct Pairs {
  __m128i lo, hi;
};
HWY_INLINE Pairs pairs_i16(Bytes u, Bytes s) { return {_mm_maddubs_epi16(u.lo, s.lo), _mm_maddubs_epi16(u.hi, s.hi)}; }
HWY_INLINE I32 pairs_i32(Bytes u, Bytes s, Pairs minus) {
  const __m128i lo = _mm_sub_epi16(_mm_maddubs_epi16(u.lo, s.lo), minus.lo);
  const __m128i hi = _mm_sub_epi16(_mm_maddubs_epi16(u.hi, s.hi), minus.hi);
  return I32{_mm_madd_epi16(_mm_add_epi16(lo, hi), _mm_set1_epi16(1))};  // |lo + hi| ≤ 4·15·127 + 4·8·127
}
HWY_INLINE I32 pairs_i32(Bytes u, Bytes s) {
  const __m128i ones = _mm_set1_epi16(1);
  return I32{_mm_add_epi32(_mm_madd_epi16(_mm_maddubs_epi16(u.lo, s.lo), ones), _mm_madd_epi16(_mm_maddubs_epi16(u.hi, s.hi), ones))};
}
HWY_INLINE Bytes low_nibbles(const uint8_t* p) {
  const Bytes v = load_block(p);
  const __m128i mask = _mm_set1_epi8(0x0F);
  return {_mm_and_si128(v.lo, mask), _mm_and_si128(v.hi, mask)};
}
HWY_INLINE Bytes high_nibbles(const uint8_t* p) {
  const Bytes v = load_block(p);
  const __m128i mask = _mm_set1_epi8(0x0F);
  return {_mm_and_si128(_mm_srli_epi16(v.lo, 4), mask), _mm_and_si128(_mm_srli_epi16(v.hi, 4), mask)};
}
#endif

// Σ q·a over one Q4_K sub-block: q the low (even sub-block) or high (odd) nibbles of 32 bytes,
// a its 32 int8 activations. Nibbles are unsigned, so they multiply as they are.
HWY_INLINE I32 q4_k_sub_block_sum(const uint8_t* nibbles, bool high, const int8_t* a) {
  return pairs_i32(high ? high_nibbles(nibbles) : low_nibbles(nibbles), load_block(a));
}

template <int M, int J, DType W>
HWY_INLINE void block_sums(const uint8_t* const* block, const int8_t* a, int64_t k, I32 (&sums)[M][J]) {
  Bytes av[M];
  Pairs eight_a[M];  // Q4_0: 8·a in int16 pairs, once per row of A for all J weight rows
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i) {
    av[i] = load_block(a + i * k);
    if constexpr (W == DType::Q4_0) eight_a[i] = pairs_i16(eights(), av[i]);
  }
#pragma GCC unroll 4
  for (int j = 0; j < J; ++j) {
    if constexpr (W == DType::Q8_0) {
      const Bytes w = load_block(block[j] + 2), w_abs = abs_bytes(w);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) sums[i][j] = pairs_i32(w_abs, sign_of(av[i], w));
    } else {
      const Bytes w = q4_nibbles(block[j] + 2);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) sums[i][j] = pairs_i32(w, av[i], eight_a[i]);
    }
  }
}
#else
// Elsewhere (scalar, EMU128): the int8 values widened to int16 and multiplied in pairs.
template <int M, int J, DType W>
HWY_INLINE void block_sums(const uint8_t* const* block, const int8_t* a0, int64_t k, I32 (&sums)[M][J]) {
  const DotTags t;
  const int64_t L = static_cast<int64_t>(hn::Lanes(t.i16));
  I32 s1[M][J];
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < J; ++j) sums[i][j] = s1[i][j] = hn::Zero(t.i32);
  if constexpr (W == DType::Q8_0) {
    for (int64_t c = 0; c < kQuantBlock; c += L) {
      hn::Vec<decltype(t.i16)> av[M];
      for (int i = 0; i < M; ++i) av[i] = hn::PromoteTo(t.i16, hn::LoadU(t.i8, a0 + i * k + c));
      for (int j = 0; j < J; ++j) {
        const auto wv = hn::PromoteTo(t.i16, hn::LoadU(t.i8, reinterpret_cast<const int8_t*>(block[j] + 2) + c));
        for (int i = 0; i < M; ++i) sums[i][j] = hn::ReorderWidenMulAccumulate(t.i32, wv, av[i], sums[i][j], s1[i][j]);
      }
    }
  } else {  // Q4_0: low nibbles are values 0..15, high nibbles 16..31, each minus 8
    const auto eight = hn::Set(t.i16, 8);
    for (int64_t c = 0; c < kQuantBlock / 2; c += L) {
      hn::Vec<decltype(t.i16)> alo[M], ahi[M];
      for (int i = 0; i < M; ++i) {
        alo[i] = hn::PromoteTo(t.i16, hn::LoadU(t.i8, a0 + i * k + c));
        ahi[i] = hn::PromoteTo(t.i16, hn::LoadU(t.i8, a0 + i * k + 16 + c));
      }
      for (int j = 0; j < J; ++j) {
        const auto v = hn::LoadU(t.u8, block[j] + 2 + c);
        const auto lo = hn::Sub(hn::PromoteTo(t.i16, hn::And(v, hn::Set(t.u8, 0x0F))), eight);
        const auto hi = hn::Sub(hn::PromoteTo(t.i16, hn::ShiftRight<4>(v)), eight);
        for (int i = 0; i < M; ++i) {
          sums[i][j] = hn::ReorderWidenMulAccumulate(t.i32, lo, alo[i], sums[i][j], s1[i][j]);
          sums[i][j] = hn::ReorderWidenMulAccumulate(t.i32, hi, ahi[i], sums[i][j], s1[i][j]);
        }
      }
    }
  }
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < J; ++j) sums[i][j] = hn::RearrangeToOddPlusEven(sums[i][j], s1[i][j]);
}

HWY_INLINE I32 q4_k_sub_block_sum(const uint8_t* nibbles, bool high, const int8_t* a) {
  const DotTags t;
  const int64_t L = static_cast<int64_t>(hn::Lanes(t.i16));
  I32 sum = hn::Zero(t.i32), odd = hn::Zero(t.i32);
  for (int64_t c = 0; c < kQuantBlock; c += L) {
    const auto v = hn::LoadU(t.u8, nibbles + c);
    const auto q = hn::PromoteTo(t.i16, high ? hn::ShiftRight<4>(v) : hn::And(v, hn::Set(t.u8, 0x0F)));
    sum = hn::ReorderWidenMulAccumulate(t.i32, q, hn::PromoteTo(t.i16, hn::LoadU(t.i8, a + c)), sum, odd);
  }
  return hn::RearrangeToOddPlusEven(sum, odd);
}
#endif

// out[i][j] = Σ over blocks of weight row w[j] (Q8_0 or Q4_0) · A row i, for M rows of A and J
// weight rows: each A block is loaded once for the J rows. Every loop over i and j is unrolled so
// the accumulators stay in registers (rolled, they live on the stack).
template <int M, int J, DType W>
HWY_INLINE void quant_dot_rows(const uint8_t* const* w, const int8_t* aq, const float* ad, int64_t k, float (*out)[J]) {
  const DotTags t;
  const int64_t blocks = k / kQuantBlock;
  constexpr int64_t kBlockBytes = quant_block_bytes(W);
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
    I32 sums[M][J];
    block_sums<M, J, W>(block, aq + b * kQuantBlock, k, sums);
#pragma GCC unroll 4
    for (int j = 0; j < J; ++j) {
      const float dw = f16[block[j][0] | (block[j][1] << 8)];
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) acc[i][j] = hn::MulAdd(hn::ConvertTo(t.f32, sums[i][j]), hn::Set(t.f32, dw * ad[i * blocks + b]), acc[i][j]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < J; ++j) out[i][j] = hn::GetLane(hn::SumOfLanes(t.f32, acc[i][j]));
}

// The Q4_K counterpart of quant_dot_rows: per super-block of weight row j and sub-block s
// (scale d·sc_s, min dmin·m_s) and A's block (scale da, sum Σa): d·sc_s·da·Σ q·a − dmin·m_s·da·Σa.
// The first term is the vector part; the second needs only A's block sums (a_sums = da·Σa,
// m·k/32 of them), so it is summed in scalars.
template <int M, int J>
HWY_INLINE void q4_k_dot_rows(const uint8_t* const* w, const int8_t* aq, const float* ad, const float* a_sums, int64_t k, float (*out)[J]) {
  const DotTags t;
  const int64_t blocks = k / kQuantBlock, super_blocks = k / kQ4KBlock;
  constexpr int kSubBlocks = kQ4KBlock / kQuantBlock;
  const float* f16 = f16_to_f32_table();
  hn::Vec<decltype(t.f32)> acc[M][J];
  float mins[M][J];
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < J; ++j) acc[i][j] = hn::Zero(t.f32), mins[i][j] = 0.0f;
  for (int64_t sb = 0; sb < super_blocks; ++sb) {
#pragma GCC unroll 4
    for (int j = 0; j < J; ++j) {
      const uint8_t* block = w[j] + sb * kQ4KBlockBytes;
      hwy::Prefetch(block + J * super_blocks * kQ4KBlockBytes);  // the next J rows (see quant_dot_rows)
      hwy::Prefetch(block + J * super_blocks * kQ4KBlockBytes + 64);
      hwy::Prefetch(block + J * super_blocks * kQ4KBlockBytes + 128);
      const float d = f16[block[0] | (block[1] << 8)], dmin = f16[block[2] | (block[3] << 8)];
      uint8_t sc[kSubBlocks], mn[kSubBlocks];
      unpack_q4_k_scales(block + 4, sc, mn);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) {
        const int64_t first = i * blocks + sb * kSubBlocks;  // A row i's first block in this super-block
        float min_sum = 0.0f;
        for (int s = 0; s < kSubBlocks; ++s) min_sum += static_cast<float>(mn[s]) * a_sums[first + s];
        mins[i][j] += dmin * min_sum;
        for (int s = 0; s < kSubBlocks; ++s) {
          const I32 sum = q4_k_sub_block_sum(block + 16 + (s / 2) * kQuantBlock, s % 2 == 1, aq + i * k + (sb * kSubBlocks + s) * kQuantBlock);
          acc[i][j] = hn::MulAdd(hn::ConvertTo(t.f32, sum), hn::Set(t.f32, d * static_cast<float>(sc[s]) * ad[first + s]), acc[i][j]);
        }
      }
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < J; ++j) out[i][j] = hn::GetLane(hn::SumOfLanes(t.f32, acc[i][j])) - mins[i][j];
}

// Columns [j0, j1) of a quantised dot-path product, A already quantised (aq, ad).
// Q4_K also takes A's block sums (a_sums; null for the other types).
template <int M, DType W>
void quant_dot_columns(const GemmArgs& g, const int8_t* aq, const float* ad, const float* a_sums, int64_t j0, int64_t j1) {
  constexpr int J = M == 1 ? 4 : M == 2 ? 2 : 1;  // M·J accumulators and sums in registers
  const int64_t row_bytes = static_cast<int64_t>(dtype_bytes(W, g.ldb));  // ldb is whole blocks
  auto run = [&](auto width, int64_t j) {
    constexpr int N = decltype(width)::value;
    const uint8_t* rows[N];
    for (int r = 0; r < N; ++r) rows[r] = g.b_quant + (j + r) * row_bytes;
    float sums[M][N];
    if constexpr (W == DType::Q4_K) q4_k_dot_rows<M, N>(rows, aq, ad, a_sums, g.k, sums);
    else quant_dot_rows<M, N, W>(rows, aq, ad, g.k, sums);
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
void quant_dot_task_of(const GemmArgs& g, const int8_t* aq, const float* ad, const float* a_sums, int64_t j0, int64_t j1) {
  switch (g.m) {
    case 1: quant_dot_columns<1, W>(g, aq, ad, a_sums, j0, j1); break;
    case 2: quant_dot_columns<2, W>(g, aq, ad, a_sums, j0, j1); break;
    case 3: quant_dot_columns<3, W>(g, aq, ad, a_sums, j0, j1); break;
    default: quant_dot_columns<4, W>(g, aq, ad, a_sums, j0, j1); break;
  }
}

inline void quant_dot_task(const GemmArgs& g, const int8_t* aq, const float* ad, const float* a_sums, int64_t j0, int64_t j1) {
  if (g.b_quant_type == DType::Q8_0) quant_dot_task_of<DType::Q8_0>(g, aq, ad, nullptr, j0, j1);
  else if (g.b_quant_type == DType::Q4_0) quant_dot_task_of<DType::Q4_0>(g, aq, ad, nullptr, j0, j1);
  else quant_dot_task_of<DType::Q4_K>(g, aq, ad, a_sums, j0, j1);
}

}  // namespace HWY_NAMESPACE
}  // namespace smelt
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
