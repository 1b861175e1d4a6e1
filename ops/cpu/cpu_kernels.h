// Entry points of the CPU kernels (each dispatches to the best Highway target at run time): the
// row-sized pieces the CPU's whole ops (ops/cpu/*_ops.cc) are built from. Tests call them
// directly to compare against scalar references, and `smelt bench` times the GEMMs.
#pragma once
#include <cstdint>

#include "ops/backend.h"
#include "runtime/dtype.h"

namespace smelt {

// C[m, n] = alpha * sum_k A[m, k] * B[k, n] + beta * C[m, n], where A is read at a[i*lda + k]
// (or a[k*lda + i] when trans_a) and B at b[k*ldb + j] (or b[j*ldb + k] when trans_b).
// A gather folded into the product: with a_rows set (A not transposed) row i of A is row
// a_rows[i] of a; with b_rows set (B not transposed) row k of B is row b_rows[k] of b. The MoE
// dispatch reads its tokens this way instead of copying them into expert order.
// B may hold bf16 values instead (b_bf16 set, b unset): they are widened to f32 as they are read
// and the arithmetic stays f32. Weights kept in bf16 halve their memory and the bytes a decoding
// step streams through the cache. Or B may be a block-quantised Bᵀ (b_quant set, trans_b, k and
// ldb whole blocks of 32): row j of Bᵀ starts dtype_bytes(b_quant_type, j·ldb) bytes in. Products
// of up to kGemmDotRows rows quantise A's rows to int8 blocks and take integer dot products
// (decoding); longer ones dequantise B as they pack it.
// With bf16_math, A and B are rounded to bf16 (to nearest even) and their products summed in f32:
// on AVX512_BF16 by VDPBF16PS (twice the f32 rate), elsewhere by the f32 kernel on the rounded
// values, so the result is the same up to summation order on every CPU. Products of at most
// kGemmDotRows rows against a transposed B (decoding, bound by memory, not arithmetic) stay f32.
// Training's "precision": "bf16" and weights kept in bf16 ask for it.
struct GemmArgs {
  int64_t m = 0, n = 0, k = 0;
  const float* a = nullptr;
  int64_t lda = 0;
  bool trans_a = false;
  const float* b = nullptr;
  int64_t ldb = 0;
  bool trans_b = false;
  float* c = nullptr;
  int64_t ldc = 0;
  float alpha = 1.0f, beta = 0.0f;
  const int64_t* a_rows = nullptr;
  const int64_t* b_rows = nullptr;
  const uint16_t* b_bf16 = nullptr;
  const uint8_t* b_quant = nullptr;
  DType b_quant_type = DType::F32;
  bool bf16_math = false;
};


void cpu_binary(BinaryOp op, const float* a, const float* b, float* out, int64_t n);
void cpu_binary_scalar(BinaryOp op, const float* a, float b, float* out, int64_t n);
void cpu_unary(UnaryOp op, const float* x, float* out, int64_t n, float param);
void cpu_axpy(float a, const float* x, float* y, int64_t n);
float cpu_dot(const float* x, const float* y, int64_t n);
void cpu_adamw(float* p, const float* g, float* m, float* v, int64_t n, const AdamWStep& step);
void cpu_gemm(const GemmArgs& args);
void cpu_grouped_gemm(const GemmArgs* problems, int64_t count);
void cpu_rms_norm_forward(const float* x, const float* residual, const float* w, float* sum, float* out, float* rstd, int64_t rows,
                          int64_t cols, float eps);
void cpu_softmax(const float* x, float* out, int64_t rows, int64_t cols, bool log, float* lse = nullptr);

}  // namespace smelt
