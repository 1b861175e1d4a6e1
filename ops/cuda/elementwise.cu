// The CUDA op table's elementwise family: broadcasting binary ops over strided views, the unary
// ops and their derivatives (ops/unary_math.h, shared with the CPU), SwiGLU and its
// backward. One thread per output element, grid-stride loops, on the GPU's compute stream.
#include <cuda_runtime.h>

#include <algorithm>

#include "ops/cuda/cuda_ops.h"
#include "ops/unary_math.h"
#include "runtime/cuda_launch.cuh"
#include "runtime/strided.h"

namespace smelt {
namespace {

__device__ float apply_binary(int op, float a, float b) {
  switch (static_cast<BinaryOp>(op)) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
  }
  return 0.0f;
}

__device__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ float apply_unary(int op, float x, float p) {
  switch (static_cast<UnaryOp>(op)) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Exp: return expf(x);
    case UnaryOp::Log: return logf(x);
    case UnaryOp::Sqrt: return sqrtf(x);
    case UnaryOp::Rsqrt: return 1.0f / sqrtf(x);
    case UnaryOp::Silu: return x * sigmoidf(x);
    case UnaryOp::Gelu: return x * sigmoidf(2.0f * 0.7978845608028654f * (x + 0.044715f * x * x * x));  // tanh form
    case UnaryOp::Sigmoid: return sigmoidf(x);
    case UnaryOp::Tanh: return tanhf(x);
    case UnaryOp::Pow: return powf(x, p);
    case UnaryOp::AddScalar: return x + p;
    case UnaryOp::MulScalar: return x * p;
    case UnaryOp::Abs: return fabsf(x);
    case UnaryOp::Positive: return x > 0.0f ? 1.0f : 0.0f;
    case UnaryOp::ClampMin: return fmaxf(x, p);
  }
  return 0.0f;
}

__global__ void binary_kernel(int op, const float* a, const float* b, float* out, TwoStrides bc, int64_t n) {
  SMELT_GRID_STRIDE(i, n) {
    int64_t ia, ib;
    bc.at(i, ia, ib);
    out[i] = apply_binary(op, a[ia], b[ib]);
  }
}

__global__ void unary_kernel(int op, const float* x, float p, float* out, int64_t n) {
  SMELT_GRID_STRIDE(i, n) out[i] = apply_unary(op, x[i], p);
}

__global__ void unary_backward_kernel(int op, const float* x, const float* y, const float* g, float p, float* dx, int64_t n) {
  SMELT_GRID_STRIDE(i, n) dx[i] = g[i] * unary_derivative(static_cast<UnaryOp>(op), x[i], y[i], p);
}

__global__ void swiglu_kernel(const float* gate, const float* up, float* out, int64_t n) {
  SMELT_GRID_STRIDE(i, n) out[i] = gate[i] * sigmoidf(gate[i]) * up[i];
}

__global__ void swiglu_backward_kernel(const float* gate, const float* up, const float* g, float* dgate, float* dup, int64_t n) {
  SMELT_GRID_STRIDE(i, n) {
    const float x = gate[i], s = sigmoidf(x);
    dup[i] = g[i] * x * s;
    dgate[i] = g[i] * up[i] * s * (1.0f + x * (1.0f - s));
  }
}

}  // namespace

void cuda_binary_op(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  const Shape& shape = out.shape();
  const TwoStrides bc = two_strides(shape, broadcast_strides(a, shape), a.offset(), broadcast_strides(b, shape), b.offset(), "cuda binary");
  const int64_t n = out.numel();
  if (n == 0) return;
  binary_kernel<<<cuda_grid_for(n), 256, 0, cuda_stream(out)>>>(static_cast<int>(op), static_cast<const float*>(a.storage()->data()),
                                                           static_cast<const float*>(b.storage()->data()), f32_out(out), bc, n);
  cuda_check_launch(out, "binary");
}

void cuda_unary_op(UnaryOp op, const Tensor& x, float param, const Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  unary_kernel<<<cuda_grid_for(n), 256, 0, cuda_stream(out)>>>(static_cast<int>(op), f32(x), param, f32_out(out), n);
  cuda_check_launch(out, "unary");
}

void cuda_unary_backward_op(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& g, float param, const Tensor& dx) {
  const int64_t n = dx.numel();
  if (n == 0) return;
  unary_backward_kernel<<<cuda_grid_for(n), 256, 0, cuda_stream(dx)>>>(static_cast<int>(op), f32(x), f32(y), f32(g), param, f32_out(dx), n);
  cuda_check_launch(dx, "unary_backward");
}

void cuda_swiglu_op(const Tensor& gate, const Tensor& up, const Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  swiglu_kernel<<<cuda_grid_for(n), 256, 0, cuda_stream(out)>>>(f32(gate), f32(up), f32_out(out), n);
  cuda_check_launch(out, "swiglu");
}

void cuda_swiglu_backward_op(const Tensor& gate, const Tensor& up, const Tensor& g, const Tensor& dgate, const Tensor& dup) {
  const int64_t n = g.numel();
  if (n == 0) return;
  swiglu_backward_kernel<<<cuda_grid_for(n), 256, 0, cuda_stream(dgate)>>>(f32(gate), f32(up), f32(g), f32_out(dgate), f32_out(dup), n);
  cuda_check_launch(dgate, "swiglu_backward");
}

}  // namespace smelt
