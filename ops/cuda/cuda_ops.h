// The CUDA op table's entries (ops/backend.h's OpTable), one .cu file per family in ops/cuda/,
// mirroring ops/cpu/. Built only with CUDA (SMELT_HAVE_CUDA). Families so far: elementwise.
#pragma once
#include <cuda_runtime.h>

#include "ops/backend.h"

namespace smelt {

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

}  // namespace smelt
