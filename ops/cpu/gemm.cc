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
// products of few rows against a transposed B (decoding's tokens, a prompt's), which run as dot
// products with both operands read in place (gemm_dot.cc).
// B may be stored as bf16 (GemmArgs::b_bf16); it is widened to f32 when packed or loaded. A
// block-quantised Bᵀ (GemmArgs::b_quant) is dequantised as it is packed; few-row products with
// it take the integer dot path (ops/cpu/quant_dot-inl.h). With GemmArgs::bf16_math the packed
// panels are rewritten as bf16 pairs for the VDPBF16PS micro-kernel (ops/cpu/gemm_bf16.h), or
// rounded in place where the CPU lacks it. The blocking and all packing: gemm_pack-inl.h.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/cpu/gemm.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/aligned_allocator.h"
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "ops/cpu/gemm_operands-inl.h"
#include "ops/cpu/gemm_pack-inl.h"

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
// Both are cut in whole micro-panels as evenly as they go, so the tasks are the same size to
// within one panel: a thin last M block (1024 rows as five blocks of 180 and one of 124) left
// one of two threads idle for 3.6 % of a 1024³ product's compute.
struct Tiling {
  int64_t n_panels = 0, m_blocks = 0, n_blocks = 0;
  int64_t m_panels = 0;  // MR-row micro-panels over all of M (the last one zero padded)
  int64_t tasks() const { return m_blocks * n_blocks; }
  // M block mb covers micro-panels [m_panel_begin(mb), m_panel_begin(mb + 1)); N block nb the
  // B panels [panel_begin(nb), panel_begin(nb + 1)).
  int64_t m_panel_begin(int64_t mb) const { return mb * m_panels / m_blocks; }
  int64_t panel_begin(int64_t nb) const { return nb * n_panels / n_blocks; }
  int64_t packed_rows() const { return m_panels * kMR; }  // A's packed rows per unit of K
};

Tiling make_tiling(const GemmArgs& g, int64_t nr, int64_t target_tasks) {
  Tiling t;
  t.n_panels = (g.n + nr - 1) / nr;
  t.m_panels = (g.m + kMR - 1) / kMR;
  t.m_blocks = (t.m_panels * kMR + kMC - 1) / kMC;
  t.n_blocks = (t.n_panels * nr + kNCTile - 1) / kNCTile;
  // Enough tasks to keep every thread busy: short-and-wide products (weight gradients, M = hidden
  // size) split N finer, since A is read in place and costs nothing to share between tasks.
  if (t.tasks() < target_tasks) t.n_blocks = std::min(t.n_panels, (target_tasks + t.m_blocks - 1) / t.m_blocks);
  return t;
}

// One task: the (mb, nb) tile of g over K block [k0, k0 + kc), A and B taken from their packed
// panels (packed_a: this product's micro-panels of A, kMR × kc each, M blocks one after another).
void run_tile(const GemmArgs& g, const Tiling& t, int64_t task, int64_t k0, int64_t kc, const float* packed_a, const float* packed_b,
              int64_t nr, bool pairs) {
  const int64_t mb = task / t.n_blocks, nb = task % t.n_blocks;
  const int64_t i0 = t.m_panel_begin(mb) * kMR, mc = std::min(t.m_panel_begin(mb + 1) * kMR, g.m) - i0;
  const bool overwrite = k0 == 0 && g.beta == 0.0f;
  const float* pa = packed_a + i0 * kc;
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
int64_t packed_width(const Tiling& t, int64_t nr) { return t.packed_rows() + t.n_panels * nr; }

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
  // B packing tasks per K block: one per 4 panels, each a group of 4 panels (or, where
  // packs_b_by_rows, a slice of the rows of all of them).
  constexpr int64_t kPackPanels = 4;
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
      packs += blocks * ((t.n_panels + kPackPanels - 1) / kPackPanels + t.m_blocks);  // per K block: B tasks, then A blocks
      a_total += t.packed_rows() * span;
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
        float* panels = packed_b + b_offset[j] + (k0 - k_begin) * tl.n_panels * nr;
        if (packs_b_by_rows(g)) {
          pack_b_any(g, k0, kc, nr, 0, tl.n_panels, v * kc / b_packs, (v + 1) * kc / b_packs, panels);
          return;
        }
        const int64_t p0 = v * kPackPanels, p1 = std::min(tl.n_panels, (v + 1) * kPackPanels);
        pack_b_any(g, k0, kc, nr, p0, p1, 0, kc, panels);
        if (g.bf16_math) panels_to_bf16(panels + p0 * kc * nr, p1 - p0, kc, nr, pairs);
      } else {
        const int64_t mb = v - b_packs, p0 = tl.m_panel_begin(mb), p1 = tl.m_panel_begin(mb + 1), i0 = p0 * kMR;
        float* block = packed_a + a_offset[j] + (k0 - k_begin) * tl.packed_rows() + i0 * kc;
        pack_a(g, i0, std::min(p1 * kMR, g.m) - i0, k0, kc, block);
        if (g.bf16_math) panels_to_bf16(block, p1 - p0, kc, kMR, pairs);
      }
    });
    parallel_tasks(tasks, [&](int64_t t) {
      const size_t j = std::upper_bound(first_task.begin(), first_task.end(), t) - first_task.begin() - 1;
      const GemmArgs& g = *live[owner[j]];
      const Tiling& tl = tilings[owner[j]];
      for (int64_t k0 = k_begin; k0 < std::min(k_end, g.k); k0 += kKC)
        run_tile(g, tl, t - first_task[j], k0, std::min(kKC, g.k - k0),
                 packed_a + a_offset[j] + (k0 - k_begin) * tl.packed_rows(),
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
