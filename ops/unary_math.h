// The unary ops' derivatives, written once for every backend: the CPU's and the CUDA kernels
// include this (host and device functions alike), so the backward formulas cannot drift apart.
#pragma once
#include <math.h>

#include "ops/backend.h"

#ifdef __CUDACC__
#define SMELT_HOST_DEVICE __host__ __device__
#else
#define SMELT_HOST_DEVICE
#endif

namespace smelt {

// d(op(x))/dx at one element, given x, y = op(x) and the op's scalar parameter.
SMELT_HOST_DEVICE inline float unary_derivative(UnaryOp op, float x, float y, float p) {
  switch (op) {
    case UnaryOp::Neg: return -1.0f;
    case UnaryOp::Exp: return y;
    case UnaryOp::Log: return 1.0f / x;
    case UnaryOp::Sqrt: return 0.5f / y;
    case UnaryOp::Rsqrt: return -0.5f * y * y * y;
    case UnaryOp::Sigmoid: return y * (1.0f - y);
    case UnaryOp::Tanh: return 1.0f - y * y;
    case UnaryOp::Silu: {
      const float s = 1.0f / (1.0f + expf(-x));
      return s * (1.0f + x * (1.0f - s));
    }
    case UnaryOp::Gelu: {
      const float c0 = 0.7978845608028654f, c1 = 0.044715f;
      const float t = tanhf(c0 * (x + c1 * x * x * x));
      return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * c0 * (1.0f + 3.0f * c1 * x * x);
    }
    case UnaryOp::Pow: return p * powf(x, p - 1.0f);
    case UnaryOp::AddScalar: return 1.0f;
    case UnaryOp::MulScalar: return p;
    case UnaryOp::Abs: return x > 0 ? 1.0f : (x < 0 ? -1.0f : 0.0f);
    case UnaryOp::Positive: return 0.0f;
    case UnaryOp::ClampMin: return x > p ? 1.0f : 0.0f;
  }
  return 0.0f;
}

}  // namespace smelt
