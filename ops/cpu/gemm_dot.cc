// The GEMM's dot-product path: products with at most four rows of A against a transposed B
// (decoding: one token times a weight [out, in]) skip packing, which would copy the whole
// weight for each token while an MR-row micro-panel would be mostly padding. Each output is the
// dot product of an A row and a B row; a block of J B rows is read once for all the A rows.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/cpu/gemm_dot.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "ops/cpu/gemm_dot_tile-inl.h"
#include "ops/cpu/gemm_operands-inl.h"
#include "ops/cpu/quant_dot-inl.h"
#include "ops/cpu/quant_dot_x8-inl.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/gemm_dot.h"
#include "runtime/thread_pool.h"

HWY_BEFORE_NAMESPACE();
#if SMELT_X8_VNNI
#pragma GCC target("avx512vnni")  // the x8 kernels' (quant_dot_x8-inl.h), inlined here
#endif
namespace smelt {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// B rows (output columns) per parallel task: about kDotTasksPerThread tasks per thread and
// product, at least kDotMinCols, a multiple of 8 (interleaved groups of rows stay whole). Few
// and long: each task starts a new stream of weights whose first lines nothing has prefetched,
// and a quantised task is short (SmolLM2's q4_0 at 8 tasks per thread: 13 KB). Decoding SmolLM2
// at 2 tasks per thread against 8 (one binary, alternating rounds, median tok/s, AMD Zen 5):
// q4_0 402 against 328, q4_k 385 against 272, q8_0 236 against 209, bf16 150 against 134;
// f32 (92 KB tasks at 8) within the noise.
constexpr int64_t kDotMinCols = 32, kDotTasksPerThread = 2;
int64_t dot_task_cols(int64_t n) {
  const int64_t per_task = (n + kDotTasksPerThread * num_threads() - 1) / (kDotTasksPerThread * num_threads());
  return std::max(kDotMinCols, (per_task + kX8Rows - 1) / kX8Rows * kX8Rows);
}

template <int M, int J, typename BT>
void dot_block(const GemmArgs& g, const BT* b, int64_t j0) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  hn::Vec<decltype(d)> acc[M][J];
  const float* a[M];
  const BT* brow[J];
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i) {
    a[i] = g.a + a_row(g, i) * g.lda;
#pragma GCC unroll 4
    for (int j = 0; j < J; ++j) acc[i][j] = hn::Zero(d);
  }
#pragma GCC unroll 4
  for (int j = 0; j < J; ++j) brow[j] = b + (j0 + j) * g.ldb;
  int64_t k = 0;
  for (; k + N <= g.k; k += N) {
    hn::Vec<decltype(d)> bv[J];
#pragma GCC unroll 4
    for (int j = 0; j < J; ++j) {
      // A task's rows are contiguous and short (SmolLM2: 1-2 KiB): the hardware prefetcher
      // starts late on each of the J streams, so fetch the same columns of the next J rows
      // (measured when one-row products came here too: decoding f32 and bf16, best of 5
      // alternating runs 47.5 against 41.0 and 72.0 against 59.5 tok/s).
      hwy::Prefetch(brow[j] + J * g.ldb + k);
      bv[j] = load_f32(d, brow[j] + k);
    }
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      const auto av = hn::LoadU(d, a[i] + k);
#pragma GCC unroll 4
      for (int j = 0; j < J; ++j) acc[i][j] = hn::MulAdd(av, bv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < J; ++j) {
      float sum = hn::GetLane(hn::SumOfLanes(d, acc[i][j]));
      for (int64_t t = k; t < g.k; ++t) sum += a[i][t] * to_f32(brow[j][t]);
      float* c = g.c + i * g.ldc + j0 + j;
      *c = g.alpha * sum + (g.beta == 0.0f ? 0.0f : g.beta * *c);  // beta 0 ignores NaN garbage in C
    }
}

// Columns [j0, j1) of a product with one row of A (decoding), one B row after the other, each
// from start to end: a task's rows are contiguous, so it reads one sequential stream, which the
// hardware prefetcher follows at full speed. (Reading 4 rows side by side, as dot_block does, is
// 4 streams a row apart: SmolLM2's f32 matrices read that way at 41.5 GB/s against 46.2 in one
// stream, in a stand-alone model of one token's products on AMD Zen 5, best of 8 alternating
// rounds.) Four accumulators hide the FMA latency.
template <typename BT>
void dot_rows_one_a(const GemmArgs& g, const BT* b, int64_t j0, int64_t j1) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const float* a = g.a + a_row(g, 0) * g.lda;
  for (int64_t j = j0; j < j1; ++j) {
    const BT* row = b + j * g.ldb;
    auto acc0 = hn::Zero(d), acc1 = hn::Zero(d), acc2 = hn::Zero(d), acc3 = hn::Zero(d);
    int64_t k = 0;
    for (; k + 4 * N <= g.k; k += 4 * N) {
      acc0 = hn::MulAdd(hn::LoadU(d, a + k), load_f32(d, row + k), acc0);
      acc1 = hn::MulAdd(hn::LoadU(d, a + k + N), load_f32(d, row + k + N), acc1);
      acc2 = hn::MulAdd(hn::LoadU(d, a + k + 2 * N), load_f32(d, row + k + 2 * N), acc2);
      acc3 = hn::MulAdd(hn::LoadU(d, a + k + 3 * N), load_f32(d, row + k + 3 * N), acc3);
    }
    for (; k + N <= g.k; k += N) acc0 = hn::MulAdd(hn::LoadU(d, a + k), load_f32(d, row + k), acc0);
    float sum = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(acc0, acc1), hn::Add(acc2, acc3))));
    for (; k < g.k; ++k) sum += a[k] * to_f32(row[k]);
    g.c[j] = g.alpha * sum + (g.beta == 0.0f ? 0.0f : g.beta * g.c[j]);  // beta 0 ignores NaN garbage in C
  }
}

// Columns [j0, j1) of a dot-path product.
template <int M, typename BT>
void dot_columns(const GemmArgs& g, const BT* b, int64_t j0, int64_t j1) {
  constexpr int J = M <= 2 ? 4 : 2;  // M·J accumulators + J B vectors + one A vector ≤ 16 registers
  for (; j0 + J <= j1; j0 += J) dot_block<M, J>(g, b, j0);
  for (; j0 < j1; ++j0) dot_block<M, 1>(g, b, j0);
}

// Products whose tiles compute in bf16 (A rounded once, before the tasks). Decoding's few rows
// stay f32 (bound by the weights' bytes, not by arithmetic).
bool bf16_tiles(const GemmArgs& g) { return g.m > kGemmDotRows && g.bf16_math && g.b_bf16; }

template <typename BT>
void dot_task(const GemmArgs& g, const BT* b, int64_t j0, int64_t j1) {
  if (g.m > kGemmDotRows) return dot_tile_columns(g, TileA<float>{g.a, g.lda, g.a_rows}, b, j0, j1);
  switch (g.m) {
    case 1: dot_rows_one_a(g, b, j0, j1); break;
    case 2: dot_columns<2>(g, b, j0, j1); break;
    case 3: dot_columns<3>(g, b, j0, j1); break;
    default: dot_columns<4>(g, b, j0, j1); break;
  }
}

// A's rows (through g.a_rows) rounded to bf16, row after row: what the tiles of a bf16_math
// product read.
void round_a_rows_to_bf16(const GemmArgs& g, int64_t i0, int64_t i1, uint16_t* a_bf16) {
  const hn::ScalableTag<float> d;
  const hn::Rebind<uint16_t, decltype(d)> d16;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t i = i0; i < i1; ++i) {
    const float* row = g.a + a_row(g, i) * g.lda;
    uint16_t* out = a_bf16 + i * g.k;
    int64_t k = 0;
    for (; k + N <= g.k; k += N) hn::StoreU(hn::TruncateTo(d16, hn::ShiftRight<16>(rounded_bf16_bits(d, row + k))), d16, out + k);
    for (; k < g.k; ++k) out[k] = f32_to_bf16(row[k]);
  }
}

constexpr int64_t kPrepareRows = 8;  // A rows rounded or quantised per task

// All dot-path products of a call in one parallel region, dot_task_cols(n) output columns per task.
// Products with a quantised B first have their A rows quantised (once, before the tasks).
void DotProductsKernel(const GemmArgs* const* products, int64_t count) {
  // Decoding calls this a few hundred times per token: the buffers are kept between calls.
  // (Thread-local, so the tasks below see them through these references, not by name.)
  thread_local std::vector<int64_t> first_task_buffer, a_offset_buffer, a_bf16_offset_buffer, cols_buffer;
  thread_local std::vector<int8_t> a_q_buffer;
  thread_local std::vector<float> a_d_buffer, a_sum_buffer;
  thread_local std::vector<int32_t> a_isum_buffer;
  thread_local std::vector<uint16_t> a_bf16_buffer;
  thread_local std::vector<std::pair<int64_t, int64_t>> chunk_buffer;
  std::vector<int64_t>& first_task = first_task_buffer;
  std::vector<int64_t>& a_offset = a_offset_buffer;
  std::vector<int64_t>& a_bf16_offset = a_bf16_offset_buffer;
  std::vector<int64_t>& cols = cols_buffer;
  first_task.assign(1, 0);
  a_offset.assign(1, 0);
  a_bf16_offset.assign(1, 0);
  cols.clear();
  for (int64_t p = 0; p < count; ++p) {
    const GemmArgs& g = *products[p];
    cols.push_back(dot_task_cols(g.n));
    first_task.push_back(first_task.back() + (g.n + cols.back() - 1) / cols.back());
    a_offset.push_back(a_offset.back() + (g.b_quant ? g.m * g.k : 0));
    a_bf16_offset.push_back(a_bf16_offset.back() + (bf16_tiles(g) ? g.m * g.k : 0));
  }
  a_bf16_buffer.resize(static_cast<size_t>(a_bf16_offset.back()));
  uint16_t* a_bf16 = a_bf16_buffer.data();
  a_q_buffer.resize(static_cast<size_t>(a_offset.back()));
  a_d_buffer.resize(static_cast<size_t>(a_offset.back() / kQuantBlock));
  a_sum_buffer.resize(a_d_buffer.size());
  a_isum_buffer.resize(a_d_buffer.size());
  int8_t* a_q = a_q_buffer.data();
  float *a_d = a_d_buffer.data(), *a_sum = a_sum_buffer.data();
  int32_t* a_isum = a_isum_buffer.data();
  // A's rows rounded to bf16 or quantised, in chunks of kPrepareRows rows: a prompt's on every
  // thread (serial, they kept the other thread waiting for 10 % of a q4_0 prefill), a decoded
  // token's few rows inline.
  std::vector<std::pair<int64_t, int64_t>>& chunks = chunk_buffer;  // (product, first row)
  chunks.clear();
  int64_t prepared_rows = 0;
  for (int64_t p = 0; p < count; ++p)
    if (products[p]->b_quant || bf16_tiles(*products[p])) {
      for (int64_t r = 0; r < products[p]->m; r += kPrepareRows) chunks.emplace_back(p, r);
      prepared_rows += products[p]->m;
    }
  auto prepare = [&](int64_t c) {
    const auto [p, r0] = chunks[static_cast<size_t>(c)];
    const GemmArgs& g = *products[p];
    const int64_t r1 = std::min(g.m, r0 + kPrepareRows);
    if (bf16_tiles(g)) round_a_rows_to_bf16(g, r0, r1, a_bf16 + a_bf16_offset[p]);
    if (!g.b_quant) return;
    const int64_t at = a_offset[p] / kQuantBlock;  // the product's first A block
    const bool q4_k = g.b_quant_type == DType::Q4_K || g.b_quant_type == DType::Q4_KX8;
    quantize_a_rows(g, r0, r1, q4_k ? kQ4KBlock / kQuantBlock : 1, a_q + a_offset[p], a_d + at, a_isum + at, a_sum + at);
  };
  const auto prepared_chunks = static_cast<int64_t>(chunks.size());
  if (prepared_rows >= 2 * kPrepareRows) parallel_tasks(prepared_chunks, prepare);
  else for (int64_t c = 0; c < prepared_chunks; ++c) prepare(c);
  parallel_tasks(first_task.back(), [&](int64_t t) {
    const size_t p = std::upper_bound(first_task.begin(), first_task.end(), t) - first_task.begin() - 1;
    const GemmArgs& g = *products[p];
    const int64_t j0 = (t - first_task[p]) * cols[p], j1 = std::min(g.n, j0 + cols[p]);
    const int64_t at = a_offset[p] / kQuantBlock;
    if (g.b_quant && is_interleaved(g.b_quant_type)) x8_dot_task(g, a_q + a_offset[p], a_d + at, a_isum + at, a_sum + at, j0, j1);
    else if (g.b_quant) quant_dot_task(g, a_q + a_offset[p], a_d + at, a_sum + at, j0, j1);
    else if (bf16_tiles(g) && kTilesInVdpbf16ps && cpu_has_bf16_dot())
      bf16_dot_tiles(a_bf16 + a_bf16_offset[p], g.k, g.m, g.b_bf16, g.ldb, g.k, j0, j1, g.c, g.ldc, g.alpha, g.beta);
    else if (bf16_tiles(g)) dot_tile_columns(g, TileA<uint16_t>{a_bf16 + a_bf16_offset[p], g.k, nullptr}, g.b_bf16, j0, j1);
    else if (g.b_bf16) dot_task(g, g.b_bf16, j0, j1);
    else dot_task(g, g.b, j0, j1);
  });
}

}  // namespace HWY_NAMESPACE
}  // namespace smelt
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace smelt {
HWY_EXPORT(DotProductsKernel);

bool gemm_takes_dot_path(const GemmArgs& g) {
  const bool interleaved = g.b_quant && is_interleaved(g.b_quant_type);  // any number of rows: an integer GEMM
  const bool tiles = !g.b_quant && (g.b_bf16 ? g.m <= kGemmBf16TileRows : g.m <= kGemmTileRows && !g.bf16_math);
  return (g.m <= kGemmDotRows || interleaved || tiles) && g.trans_b && !g.trans_a && g.k > 0;
}

void cpu_gemm_dot_products(const GemmArgs* const* products, int64_t count) {
  if (count > 0) HWY_DYNAMIC_DISPATCH(DotProductsKernel)(products, count);
}
}  // namespace smelt
#endif
