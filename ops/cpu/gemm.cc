// CPU f32 GEMM: C = alpha * op(A) * op(B) + beta * C, with op = identity or transpose read in
// place (no transposed copy is ever made). BLIS-style layering:
//   for each K block (kc):   pack B[kc × N] into NR-wide column panels (shared by all threads)
//     in parallel over (M block × N block) tiles: for each (MR × NR) tile run the
//       register-blocked micro-kernel, which reads A in place (see micro_kernel).
// The micro-kernel keeps an MR × NR block of C in 2·MR vector registers (MR = 6, NR = 2 vectors:
// 12 accumulators + 2 B vectors + 1 broadcast fit AVX2's 16 registers).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/cpu/gemm.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/backend.h"
#include "ops/cpu/cpu_kernels.h"
#include "runtime/error.h"
#include "runtime/thread_pool.h"

HWY_BEFORE_NAMESPACE();
namespace smelt {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

constexpr int64_t kMR = 6;
constexpr int64_t kKC = 256;   // K block: an MR×KC A panel and a KC×NR B panel stay in L1
constexpr int64_t kMC = 96;    // M block: the A block (MC×KC) stays in L2 while B panels stream past
constexpr int64_t kNCTile = 1024;  // N columns per parallel task (an A block is packed once per task)

inline int64_t a_row(const GemmArgs& g, int64_t i) { return g.a_rows ? g.a_rows[i] : i; }
inline int64_t b_row(const GemmArgs& g, int64_t k) { return g.b_rows ? g.b_rows[k] : k; }
inline float a_at(const GemmArgs& g, int64_t i, int64_t k) { return g.trans_a ? g.a[k * g.lda + i] : g.a[a_row(g, i) * g.lda + k]; }

// Packs panels [p0, p1) of B[k0:k0+kc, 0:n] (nr columns each): panel p holds rows k, each nr
// floats, zero padded. Runs on one thread; callers spread panels of all products over the pool.
void pack_b(const GemmArgs& g, int64_t k0, int64_t kc, int64_t nr, int64_t p0, int64_t p1, float* out) {
    for (int64_t p = p0; p < p1; ++p) {
      float* dst = out + p * kc * nr;
      const int64_t j0 = p * nr, cols = std::min(nr, g.n - j0);
      if (!g.trans_b) {
        for (int64_t k = 0; k < kc; ++k) {
          const float* src = g.b + b_row(g, k0 + k) * g.ldb + j0;
          std::memcpy(dst + k * nr, src, cols * sizeof(float));
          for (int64_t j = cols; j < nr; ++j) dst[k * nr + j] = 0.0f;
        }
      } else {
        // Bᵀ stored row-major: column j of the panel is a contiguous row of b. Transpose in
        // 8-deep slices of k so each slice's writes stay within a few cache lines.
        const float* src[2 * hn::MaxLanes(hn::ScalableTag<float>())];  // nr = 2 vectors
        for (int64_t j = 0; j < nr; ++j) src[j] = j < cols ? g.b + (j0 + j) * g.ldb + k0 : nullptr;
        for (int64_t kk = 0; kk < kc; kk += 8) {
          const int64_t depth = std::min<int64_t>(8, kc - kk);
          for (int64_t j = 0; j < nr; ++j) {
            float* col = dst + kk * nr + j;
            if (src[j]) {
              for (int64_t t = 0; t < depth; ++t) col[t * nr] = src[j][kk + t];
            } else {
              for (int64_t t = 0; t < depth; ++t) col[t * nr] = 0.0f;
            }
          }
        }
      }
    }
}

// acc (MR × 2 vectors) = packed A panel × packed B panel over kc; then C += alpha * acc, or
// C = alpha * acc when `overwrite` (the first K block of a beta = 0 product: no memset pass).
// A is read in place, not packed: row r of the MR-row panel starts at a_rows[r] and
// consecutive k are k_stride apart (1 for row-major A, lda for a transposed A, whose MR
// values per k are then adjacent). Broadcast loads cost the same from either layout, and
// skipping the pack saves a pass that rivals the arithmetic when N is small.
void micro_kernel(int64_t kc, const float* const* a_rows, int64_t k_stride, const float* HWY_RESTRICT pb, float* c, int64_t ldc,
                  int64_t rows, int64_t cols, float alpha, bool overwrite) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  auto c00 = hn::Zero(d), c01 = hn::Zero(d), c10 = hn::Zero(d), c11 = hn::Zero(d);
  auto c20 = hn::Zero(d), c21 = hn::Zero(d), c30 = hn::Zero(d), c31 = hn::Zero(d);
  auto c40 = hn::Zero(d), c41 = hn::Zero(d), c50 = hn::Zero(d), c51 = hn::Zero(d);
  const float *a0 = a_rows[0], *a1 = a_rows[1], *a2 = a_rows[2], *a3 = a_rows[3], *a4 = a_rows[4], *a5 = a_rows[5];
  int64_t off = 0;
  for (int64_t k = 0; k < kc; ++k, off += k_stride) {
    const auto b0 = hn::LoadU(d, pb + k * 2 * N);
    const auto b1 = hn::LoadU(d, pb + k * 2 * N + N);
    auto a = hn::Set(d, a0[off]);
    c00 = hn::MulAdd(a, b0, c00); c01 = hn::MulAdd(a, b1, c01);
    a = hn::Set(d, a1[off]);
    c10 = hn::MulAdd(a, b0, c10); c11 = hn::MulAdd(a, b1, c11);
    a = hn::Set(d, a2[off]);
    c20 = hn::MulAdd(a, b0, c20); c21 = hn::MulAdd(a, b1, c21);
    a = hn::Set(d, a3[off]);
    c30 = hn::MulAdd(a, b0, c30); c31 = hn::MulAdd(a, b1, c31);
    a = hn::Set(d, a4[off]);
    c40 = hn::MulAdd(a, b0, c40); c41 = hn::MulAdd(a, b1, c41);
    a = hn::Set(d, a5[off]);
    c50 = hn::MulAdd(a, b0, c50); c51 = hn::MulAdd(a, b1, c51);
  }
  const auto va = hn::Set(d, alpha);
  if (rows == kMR && cols == 2 * N) {
    auto update = [&](float* row, decltype(c00) lo, decltype(c00) hi) {
      if (overwrite) {
        hn::StoreU(hn::Mul(va, lo), d, row);
        hn::StoreU(hn::Mul(va, hi), d, row + N);
      } else {
        hn::StoreU(hn::MulAdd(va, lo, hn::LoadU(d, row)), d, row);
        hn::StoreU(hn::MulAdd(va, hi, hn::LoadU(d, row + N)), d, row + N);
      }
    };
    update(c + 0 * ldc, c00, c01);
    update(c + 1 * ldc, c10, c11);
    update(c + 2 * ldc, c20, c21);
    update(c + 3 * ldc, c30, c31);
    update(c + 4 * ldc, c40, c41);
    update(c + 5 * ldc, c50, c51);
    return;
  }
  // Edge tile: spill the accumulators, then add only the valid part.
  HWY_ALIGN float tile[kMR * 2 * hn::MaxLanes(d)];
  const int64_t w = 2 * N;
  hn::Store(c00, d, tile + 0 * w); hn::Store(c01, d, tile + 0 * w + N);
  hn::Store(c10, d, tile + 1 * w); hn::Store(c11, d, tile + 1 * w + N);
  hn::Store(c20, d, tile + 2 * w); hn::Store(c21, d, tile + 2 * w + N);
  hn::Store(c30, d, tile + 3 * w); hn::Store(c31, d, tile + 3 * w + N);
  hn::Store(c40, d, tile + 4 * w); hn::Store(c41, d, tile + 4 * w + N);
  hn::Store(c50, d, tile + 5 * w); hn::Store(c51, d, tile + 5 * w + N);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) c[r * ldc + j] = alpha * tile[r * w + j] + (overwrite ? 0.0f : c[r * ldc + j]);
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
  V acc[3][NV];
  for (int r = 0; r < 3; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = hn::Zero(d);
  const int64_t r1 = std::min<int64_t>(1, rows - 1), r2 = std::min<int64_t>(2, rows - 1);
  for (int64_t k = 0; k < g.k; ++k) {
    const auto a0 = hn::Set(d, a_at(g, i0, k));
    const auto a1 = hn::Set(d, a_at(g, i0 + r1, k));
    const auto a2 = hn::Set(d, a_at(g, i0 + r2, k));
    const float* brow = g.b + b_row(g, k) * g.ldb + j0;
    for (int v = 0; v < NV; ++v) {
      const auto b = hn::LoadU(d, brow + v * N);
      acc[0][v] = hn::MulAdd(a0, b, acc[0][v]);
      acc[1][v] = hn::MulAdd(a1, b, acc[1][v]);
      acc[2][v] = hn::MulAdd(a2, b, acc[2][v]);
    }
  }
  const auto va = hn::Set(d, g.alpha), vb = hn::Set(d, g.beta);
  for (int64_t r = 0; r < rows; ++r) {
    float* crow = g.c + (i0 + r) * g.ldc + j0;
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
  if (g.trans_b || g.n % N != 0 || g.n > 8 * N || g.k == 0) return false;
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

// How one product is cut into parallel tasks: M blocks of kMC rows × N blocks of tile_panels panels.
struct Tiling {
  int64_t n_panels = 0, m_blocks = 0, n_blocks = 0, tile_panels = 0;
  int64_t mc = kMC;  // rows per M block: at most kMC, evened out so no block is a thin remainder
  int64_t tasks() const { return m_blocks * n_blocks; }
};

Tiling make_tiling(const GemmArgs& g, int64_t nr, int64_t target_tasks) {
  Tiling t;
  t.n_panels = (g.n + nr - 1) / nr;
  t.m_blocks = (g.m + kMC - 1) / kMC;
  // Thin remainder blocks stream all of packed B for a few rows (experts' segments are rarely a
  // multiple of kMC): spread the rows evenly over the blocks, in whole micro-panels.
  t.mc = std::min(kMC, ((g.m + t.m_blocks - 1) / t.m_blocks + kMR - 1) / kMR * kMR);
  t.m_blocks = (g.m + t.mc - 1) / t.mc;
  t.tile_panels = std::max<int64_t>(1, kNCTile / nr);
  t.n_blocks = (t.n_panels + t.tile_panels - 1) / t.tile_panels;
  // Enough tasks to keep every thread busy: short-and-wide products (weight gradients, M = hidden
  // size) split N finer, since A is read in place and costs nothing to share between tasks.
  if (t.tasks() < target_tasks) {
    t.n_blocks = std::min(t.n_panels, (target_tasks + t.m_blocks - 1) / t.m_blocks);
    t.tile_panels = (t.n_panels + t.n_blocks - 1) / t.n_blocks;
    t.n_blocks = (t.n_panels + t.tile_panels - 1) / t.tile_panels;
  }
  return t;
}

// One task: the (mb, nb) tile of g over K block [k0, k0 + kc), B taken from its packed panels.
void run_tile(const GemmArgs& g, const Tiling& t, int64_t task, int64_t k0, int64_t kc, const float* packed_b, int64_t nr) {
  const int64_t mb = task / t.n_blocks, nb = task % t.n_blocks;
  const int64_t i0 = mb * t.mc, mc = std::min(t.mc, g.m - i0);
  const bool overwrite = k0 == 0 && g.beta == 0.0f;
  const int64_t p_end = std::min(t.n_panels, (nb + 1) * t.tile_panels);
  for (int64_t p = nb * t.tile_panels; p < p_end; ++p) {
    const int64_t j0 = p * nr, cols = std::min(nr, g.n - j0);
    for (int64_t r0 = i0; r0 < i0 + mc; r0 += kMR) {
      const int64_t rows = std::min(kMR, g.m - r0);
      const float* a_rows[kMR];
      for (int64_t r = 0; r < kMR; ++r) {
        const int64_t row = r0 + std::min(r, rows - 1);  // short panels re-read their last row
        a_rows[r] = g.trans_a ? g.a + k0 * g.lda + row : g.a + a_row(g, row) * g.lda + k0;
      }
      micro_kernel(kc, a_rows, g.trans_a ? g.lda : 1, packed_b + p * kc * nr, g.c + r0 * g.ldc + j0, g.ldc, rows, cols, g.alpha,
                   overwrite);
    }
  }
}

// Several independent products in one parallel region per K block: the tasks of all of them
// share the threads, so small and unequal products (experts' segments) keep every core busy.
void GroupedGemmKernel(const GemmArgs* problems, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    SMELT_ASSERT(!(problems[i].a_rows && problems[i].trans_a) && !(problems[i].b_rows && problems[i].trans_b),
                 "gemm: a row index needs the untransposed operand");
  }
  const hn::ScalableTag<float> d;
  const int64_t nr = 2 * static_cast<int64_t>(hn::Lanes(d));
  std::vector<const GemmArgs*> live;
  for (int64_t i = 0; i < count; ++i) {
    const GemmArgs& g = problems[i];
    scale_c(g);
    if (g.m > 0 && g.n > 0 && g.k > 0 && g.alpha != 0.0f) live.push_back(&g);
  }
  if (live.empty()) return;
  const int64_t target = std::max<int64_t>(1, 4 * static_cast<int64_t>(num_threads()) / static_cast<int64_t>(live.size()));
  std::vector<Tiling> tilings;
  std::vector<int64_t> b_offset;  // where each product's packed B starts
  int64_t b_total = 0, max_k = 0;
  for (const GemmArgs* g : live) {
    tilings.push_back(make_tiling(*g, nr, target));
    b_offset.push_back(b_total);
    b_total += tilings.back().n_panels * nr * std::min(kKC, g->k);
    max_k = std::max(max_k, g->k);
  }
  std::vector<float> packed_b(static_cast<size_t>(b_total));
  constexpr int64_t kPackPanels = 4;  // panels per packing task
  for (int64_t k0 = 0; k0 < max_k; k0 += kKC) {
    std::vector<int64_t> owner, first_task, first_pack;  // task ranges per product active in this K block
    int64_t tasks = 0, packs = 0;
    for (size_t i = 0; i < live.size(); ++i) {
      if (k0 >= live[i]->k) continue;
      owner.push_back(static_cast<int64_t>(i));
      first_task.push_back(tasks);
      first_pack.push_back(packs);
      tasks += tilings[i].tasks();
      packs += (tilings[i].n_panels + kPackPanels - 1) / kPackPanels;
    }
    first_task.push_back(tasks);
    first_pack.push_back(packs);
    // Every product's B panels are packed in one parallel region (one wake-up of the pool, not one per expert).
    parallel_for(0, packs, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const size_t j = std::upper_bound(first_pack.begin(), first_pack.end(), t) - first_pack.begin() - 1;
        const int64_t i = owner[j];
        const GemmArgs& g = *live[i];
        const int64_t p0 = (t - first_pack[j]) * kPackPanels, p1 = std::min(tilings[i].n_panels, p0 + kPackPanels);
        pack_b(g, k0, std::min(kKC, g.k - k0), nr, p0, p1, packed_b.data() + b_offset[i]);
      }
    });
    parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
      size_t j = std::upper_bound(first_task.begin(), first_task.end(), t0) - first_task.begin() - 1;
      for (int64_t t = t0; t < t1; ++t) {
        while (t >= first_task[j + 1]) ++j;
        const int64_t i = owner[j];
        const GemmArgs& g = *live[i];
        run_tile(g, tilings[i], t - first_task[j], k0, std::min(kKC, g.k - k0), packed_b.data() + b_offset[i], nr);
      }
    });
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
