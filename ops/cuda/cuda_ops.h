// The CUDA op table's entries (ops/backend.h's OpTable), one .cu file per family in ops/cuda/,
// mirroring ops/cpu/. Built only with CUDA (SMELT_HAVE_CUDA). Families so far: elementwise,
// reductions, the row-wise ops (RMS norm, softmax, RoPE) and matmul (cuBLAS).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>

#include "ops/backend.h"

namespace smelt {

// A tensor's f32 elements on its device (nullptr for an undefined, optional argument).
inline const float* f32(const Tensor& t) { return t.defined() ? static_cast<const float*>(t.device_data()) : nullptr; }
inline float* f32_out(const Tensor& t) { return t.defined() ? static_cast<float*>(t.device_data()) : nullptr; }
// The rows of the row-wise ops: the last dimension is a row.
inline int64_t last_dim(const Tensor& t) { return t.dim() == 0 ? 1 : t.size(-1); }
inline int64_t row_count(const Tensor& t) { return t.numel() / std::max<int64_t>(last_dim(t), 1); }

// The compute stream of the GPU that holds `t` (runtime/cuda_device.cu's), and a check that the
// last launch was accepted (a bad launch is an error naming the op and the device).
cudaStream_t cuda_stream(const Tensor& t);
void cuda_check_launch(const Tensor& t, const char* op);

// elementwise.cu
void cuda_binary_op(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void cuda_unary_op(UnaryOp op, const Tensor& x, float param, const Tensor& out);
void cuda_unary_backward_op(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& g, float param, const Tensor& dx);
void cuda_swiglu_op(const Tensor& gate, const Tensor& up, const Tensor& out);
void cuda_swiglu_backward_op(const Tensor& gate, const Tensor& up, const Tensor& g, const Tensor& dgate, const Tensor& dup);

// reduce.cu
void cuda_sum_axis_op(const Tensor& x, int64_t dim, const Tensor& out);
void cuda_max_axis_op(const Tensor& x, int64_t dim, const Tensor& out, const Tensor& argmax);

// rows.cu
void cuda_rms_norm_op(const Tensor& x, const Tensor& residual, const Tensor& w, float eps, const Tensor& sum, const Tensor& out,
                      const Tensor& rstd);
void cuda_rms_norm_backward_op(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& g, const Tensor& dx, const Tensor& dw);
void cuda_rope_op(const Tensor& x, const Tensor& cos, const Tensor& sin, float sign, const Tensor& out);
void cuda_softmax_op(const Tensor& x, bool log, const Tensor& out, const Tensor& lse);
void cuda_softmax_backward_op(const Tensor& y, const Tensor& g, bool log, const Tensor& dx);

// matmul.cu
void cuda_matmul_op(const Tensor& a, const Tensor& b, const Tensor& out);

}  // namespace smelt
