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
// transpose the whole weight. Prefilling SmolLM2, tiles against the packed GEMM (one binary,
// alternating rounds, tokens/s, AMD Zen 5 with a pipeline run sharing the cores): f32 at 64
// tokens 565–617 against 443–511, at 128 and 256 within the noise; bf16 at 64, 128 and 256
// tokens 937–947, 1054–1078 and 1136–1168 against 630–634, 850–895 and 1062–1074.
constexpr int64_t kGemmTileRows = 128, kGemmBf16TileRows = 256;

// Whether a product goes to the dot path: B transposed, A not, k > 0, and m ≤ kGemmDotRows, or
// m ≤ kGemmTileRows (kGemmBf16TileRows) with an unquantised B, or any m when B is a quantised
// Bᵀ with rows interleaved by 8 (an integer GEMM).
bool gemm_takes_dot_path(const GemmArgs& g);
// Runs products the dot path takes (m, n > 0, alpha ≠ 0) as one parallel region; each writes
// its own C, beta included.
void cpu_gemm_dot_products(const GemmArgs* const* products, int64_t count);

}  // namespace smelt
