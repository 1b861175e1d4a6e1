// bf16 arithmetic for the packed GEMM (GemmArgs::bf16_math): AVX512_BF16's VDPBF16PS, which
// multiplies pairs of bf16 values and adds both products to an f32 lane. gemm.cc packs its
// panels as usual, rewrites them as bf16 pairs (see pack_pairs_bf16 there) and hands them to the
// micro-kernel below. Highway 1.0 has no op for VDPBF16PS, so this one kernel is written with
// the intrinsic, in its own translation unit compiled for AVX512_BF16 and called only after the
// CPU was asked whether it has it.
#pragma once
#include <cstdint>

namespace smelt {

// Whether this CPU executes VDPBF16PS (AVX512_BF16), asked once.
bool cpu_has_bf16_dot();

// The AVX-512 micro-kernel's shape in bf16 (the f32 one's: 12 rows × 2 vectors of 16 columns).
constexpr int64_t kBf16MicroRows = 12, kBf16MicroCols = 32;

// acc (12 × 32, f32) = Σ over `pairs` k-pairs of A's pair × B's pair, where pa holds for each
// k-pair the 12 rows' (a[2p], a[2p+1]) as one 32-bit word each and pb the 32 columns' pairs
// likewise; then C (rows × cols of it) += alpha · acc, or = alpha · acc when `overwrite`.
// Only on a CPU where cpu_has_bf16_dot().
void bf16_micro_kernel_12x32(int64_t pairs, const uint32_t* pa, const uint32_t* pb, float* c, int64_t ldc, int64_t rows,
                             int64_t cols, float alpha, bool overwrite);

// C[0..m, j0..j1) = alpha · A·Bᵀ + beta · C with A [m, k] and Bᵀ [n, k] both bf16 rows, read in
// place: the dot path's tiles (6 rows of A × 4 rows of B, dot products along k summed across
// lanes at the end; see gemm_dot_tile-inl.h) in VDPBF16PS, two k per f32 lane.
// Only on a CPU where cpu_has_bf16_dot().
void bf16_dot_tiles(const uint16_t* a, int64_t lda, int64_t m, const uint16_t* b, int64_t ldb, int64_t k, int64_t j0, int64_t j1,
                    float* c, int64_t ldc, float alpha, float beta);

}  // namespace smelt
