// The CUDA op table's elementwise family: broadcasting binary ops over strided views, the unary
// ops and their derivatives (ops/unary_math.h, shared with the CPU), SwiGLU and its
// backward. One thread per output element, grid-stride loops, on the GPU's compute stream.
#include <cuda_runtime.h>

#include <algorithm>

#include "ops/cuda/cuda_ops.h"
#include "ops/unary_math.h"
#include "runtime/strided.h"

namespace smelt {
namespace {

constexpr int kMaxDims = 8;

struct Broadcast {
  int nd;
  int64_t shape[kMaxDims];
  int64_t a_stride[kMaxDims], b_stride[kMaxDims];
  int64_t a_offset, b_offset;
};

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

#define GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__global__ void binary_kernel(int op, const float* a, const float* b, float* out, Broadcast bc, int64_t n) {
  GRID_STRIDE(i, n) {
    int64_t rest = i, ia = bc.a_offset, ib = bc.b_offset;
    for (int k = bc.nd - 1; k >= 0; --k) {
      const int64_t idx = rest % bc.shape[k];
      rest /= bc.shape[k];
      ia += idx * bc.a_stride[k];
      ib += idx * bc.b_stride[k];
    }
    out[i] = apply_binary(op, a[ia], b[ib]);
  }
}

__global__ void unary_kernel(int op, const float* x, float p, float* out, int64_t n) {
  GRID_STRIDE(i, n) out[i] = apply_unary(op, x[i], p);
}

__global__ void unary_backward_kernel(int op, const float* x, const float* y, const float* g, float p, float* dx, int64_t n) {
  GRID_STRIDE(i, n) dx[i] = g[i] * unary_derivative(static_cast<UnaryOp>(op), x[i], y[i], p);
}

__global__ void swiglu_kernel(const float* gate, const float* up, float* out, int64_t n) {
  GRID_STRIDE(i, n) out[i] = gate[i] * sigmoidf(gate[i]) * up[i];
}

__global__ void swiglu_backward_kernel(const float* gate, const float* up, const float* g, float* dgate, float* dup, int64_t n) {
  GRID_STRIDE(i, n) {
    const float x = gate[i], s = sigmoidf(x);
    dup[i] = g[i] * x * s;
    dgate[i] = g[i] * up[i] * s * (1.0f + x * (1.0f - s));
  }
}

int grid_for(int64_t n) { return static_cast<int>(std::min<int64_t>((n + 255) / 256, 65535 * 4)); }

const float* f32(const Tensor& t) { return static_cast<const float*>(t.device_data()); }
float* f32_out(const Tensor& t) { return static_cast<float*>(t.device_data()); }

}  // namespace

void cuda_binary_op(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  const Shape& shape = out.shape();
  SMELT_CHECK(shape.size() <= static_cast<size_t>(kMaxDims), "cuda binary: ", out.str(), " has more than ", kMaxDims, " dimensions");
  const Shape sa = broadcast_strides(a, shape), sb = broadcast_strides(b, shape);
  Broadcast bc{};
  bc.nd = static_cast<int>(shape.size());
  for (size_t k = 0; k < shape.size(); ++k) {
    bc.shape[k] = shape[k];
    bc.a_stride[k] = sa[k];
    bc.b_stride[k] = sb[k];
  }
  bc.a_offset = a.offset();
  bc.b_offset = b.offset();
  const int64_t n = out.numel();
  if (n == 0) return;
  binary_kernel<<<grid_for(n), 256, 0, cuda_stream(out)>>>(static_cast<int>(op), static_cast<const float*>(a.storage()->data()),
                                                           static_cast<const float*>(b.storage()->data()), f32_out(out), bc, n);
  cuda_check_launch(out, "binary");
}

void cuda_unary_op(UnaryOp op, const Tensor& x, float param, const Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  unary_kernel<<<grid_for(n), 256, 0, cuda_stream(out)>>>(static_cast<int>(op), f32(x), param, f32_out(out), n);
  cuda_check_launch(out, "unary");
}

void cuda_unary_backward_op(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& g, float param, const Tensor& dx) {
  const int64_t n = dx.numel();
  if (n == 0) return;
  unary_backward_kernel<<<grid_for(n), 256, 0, cuda_stream(dx)>>>(static_cast<int>(op), f32(x), f32(y), f32(g), param, f32_out(dx), n);
  cuda_check_launch(dx, "unary_backward");
}

void cuda_swiglu_op(const Tensor& gate, const Tensor& up, const Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  swiglu_kernel<<<grid_for(n), 256, 0, cuda_stream(out)>>>(f32(gate), f32(up), f32_out(out), n);
  cuda_check_launch(out, "swiglu");
}

void cuda_swiglu_backward_op(const Tensor& gate, const Tensor& up, const Tensor& g, const Tensor& dgate, const Tensor& dup) {
  const int64_t n = g.numel();
  if (n == 0) return;
  swiglu_backward_kernel<<<grid_for(n), 256, 0, cuda_stream(dgate)>>>(f32(gate), f32(up), f32(g), f32_out(dgate), f32_out(dup), n);
  cuda_check_launch(dgate, "swiglu_backward");
}

}  // namespace smelt
