// The per-backend kernel table. Ops (ops/*.cc) do argument checks and autograd, then call the
// kernel for the tensors' device through this table. A backend that lacks a kernel says so with
// a clear error; nothing falls back silently to another device. CPU kernels live in ops/cpu/
// (Highway, runtime ISA dispatch); a CUDA table will be registered the same way from ops/cuda/.
#pragma once
#include <cstdint>
#include <string>

#include "runtime/device.h"
#include "runtime/dtype.h"

namespace smelt {

enum class BinaryOp { Add, Sub, Mul, Div };
enum class UnaryOp { Neg, Exp, Log, Sqrt, Rsqrt, Silu, Gelu, Sigmoid, Tanh, Pow, AddScalar, MulScalar, Abs };

// C[m, n] = alpha * sum_k A[m, k] * B[k, n] + beta * C[m, n], where A is read at a[i*lda + k]
// (or a[k*lda + i] when trans_a) and B at b[k*ldb + j] (or b[j*ldb + k] when trans_b).
// A gather folded into the product: with a_rows set (A not transposed) row i of A is row
// a_rows[i] of a; with b_rows set (B not transposed) row k of B is row b_rows[k] of b. The MoE
// dispatch reads its tokens this way instead of copying them into expert order.
// B may hold bf16 values instead (b_bf16 set, b unset): they are widened to f32 as they are read
// and the arithmetic stays f32. Weights kept in bf16 halve their memory and the bytes a decoding
// step streams through the cache.
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
};

// The constants of one AdamW step (optim/optimizer.cc): m ← β1·m + (1 − β1)·g,
// v ← β2·v + (1 − β2)·g², p ← p·decay − step_size·m / (√v·inv_sqrt_bc2 + eps).
struct AdamWStep {
  float decay = 1.0f, beta1 = 0.9f, beta2 = 0.999f, step_size = 0.0f, inv_sqrt_bc2 = 1.0f, eps = 1e-8f;
};

struct KernelTable {
  const char* backend = "";
  void (*binary)(BinaryOp op, const float* a, const float* b, float* out, int64_t n) = nullptr;
  // out[i] = op(a[i], b) for a scalar b: the per-row body of a broadcast.
  void (*binary_scalar)(BinaryOp op, const float* a, float b, float* out, int64_t n) = nullptr;
  void (*unary)(UnaryOp op, const float* x, float* out, int64_t n, float param) = nullptr;
  void (*gemm)(const GemmArgs& args) = nullptr;
  // Independent products run as one parallel region (MoE experts over their token segments).
  // Their C blocks must not overlap: products run concurrently and in no fixed order, so one that
  // adds into another's output (beta = 1) belongs in a later call.
  void (*grouped_gemm)(const GemmArgs* problems, int64_t count) = nullptr;
  // Row-wise RMS norm: out = x * rstd * w, rstd[r] saved for backward. With residual set, the
  // norm is of x + residual, which is also written to sum (the residual stream's add, fused).
  void (*rms_norm_forward)(const float* x, const float* residual, const float* w, float* sum, float* out, float* rstd, int64_t rows,
                           int64_t cols, float eps) = nullptr;
  // Row-wise softmax (or log-softmax) over the last dim; with lse set, also each row's log Σ exp.
  void (*softmax)(const float* x, float* out, int64_t rows, int64_t cols, bool log, float* lse) = nullptr;
  // y[i] += a * x[i]
  void (*axpy)(float a, const float* x, float* y, int64_t n) = nullptr;
  // sum of x[i] * y[i] in f32 with vector accumulators
  float (*dot)(const float* x, const float* y, int64_t n) = nullptr;
  // One AdamW step over n parameters in place (p, m, v), given their gradient g.
  void (*adamw)(float* p, const float* g, float* m, float* v, int64_t n, const AdamWStep& step) = nullptr;
};

// The table for `device`; throws when this build has no backend for it.
const KernelTable& kernels_for(Device device);
// Whether the backend of `device` implements `op` for `dtype` (names as in KernelTable).
bool backend_supports(Device device, const std::string& op, DType dtype);

// The CPU table (defined in ops/cpu/).
const KernelTable& cpu_kernels();
// Name of the SIMD target Highway chose at run time on this machine ("AVX2", "AVX3", ...).
std::string cpu_simd_target();

}  // namespace smelt
