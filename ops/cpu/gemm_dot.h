// The GEMM's dot-product path (ops/cpu/gemm_dot.cc), which the grouped GEMM hands its
// few-row products to.
#pragma once
#include <cstdint>

#include "ops/cpu/cpu_kernels.h"

namespace smelt {

constexpr int64_t kGemmDotRows = 4;  // at most this many rows of A (but any for rows interleaved by 8)

// Whether a product goes to the dot path: m ≤ kGemmDotRows (any m when B is a quantised Bᵀ with
// rows interleaved by 8), B transposed, A not, k > 0.
bool gemm_takes_dot_path(const GemmArgs& g);
// Runs products the dot path takes (m, n > 0, alpha ≠ 0) as one parallel region; each writes
// its own C, beta included.
void cpu_gemm_dot_products(const GemmArgs* const* products, int64_t count);

}  // namespace smelt
