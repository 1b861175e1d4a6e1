// The GEMM's dot-product path (ops/cpu/gemm_dot.cc), which the grouped GEMM hands its products
// of few rows against a transposed B to: decoding's tokens and a prompt's against a weight
// [out, in], read in place.
#pragma once
#include <cstdint>

#include "ops/cpu/cpu_kernels.h"

namespace smelt {

// Up to kGemmDotRows rows: each output one dot product, in f32 whatever bf16_math says (bound by
// the weights' bytes); with a quantised B, integer dot products.
constexpr int64_t kGemmDotRows = 4;
// Up to kGemmTileRows rows against an f32 Bᵀ (kGemmBf16TileRows against a bf16 one, bf16_math
// honoured): register tiles of dot products (gemm_dot_tile-inl.h), where packing would first
// transpose the whole weight. Prefilling SmolLM2 with tiles against the packed GEMM (the build
// before, three alternating rounds of `smelt bench decode --seq N --new-tokens 1`, tokens/s, AMD
// Zen 5): f32 at 64 tokens 1290–1342 against 1166–1207, at 96 1434–1469 against 1381–1404, at
// 128 1448–1500 against 1476–1583; bf16 at 64 2260–2410 against 1776–1869, at 128 2499–2644
// against 2325–2460, at 160 2589–2633 against 2470–2546, at 192 2558–2608 against 2619–2626.
constexpr int64_t kGemmTileRows = 96, kGemmBf16TileRows = 160;

// Whether a product goes to the dot path: B transposed, A not, k > 0, and m ≤ kGemmDotRows, or
// m ≤ kGemmTileRows (kGemmBf16TileRows) with an unquantised B, or any m when B is a quantised
// Bᵀ with rows interleaved by 8 (an integer GEMM).
bool gemm_takes_dot_path(const GemmArgs& g);
// Runs products the dot path takes (m, n > 0, alpha ≠ 0) as one parallel region; each writes
// its own C, beta included.
void cpu_gemm_dot_products(const GemmArgs* const* products, int64_t count);

}  // namespace smelt
