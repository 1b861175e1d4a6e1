// Entry points of the CPU kernels (each dispatches to the best Highway target at run time).
// The ops reach them through the KernelTable in ops/backend.h; tests call them directly to
// compare against scalar references.
#pragma once
#include <cstdint>

#include "ops/backend.h"

namespace smelt {

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
