// Elementwise ops with numpy broadcasting, and the activations. All differentiable; f32 compute.
#pragma once
#include "runtime/tensor.h"

namespace smelt::ops {

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, float s);
Tensor mul(const Tensor& a, float s);

Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor pow(const Tensor& x, float exponent);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor silu(const Tensor& x);
Tensor gelu(const Tensor& x);
// 1 where x > 0, else 0: a mask computed on the device (its gradient is zero).
Tensor positive(const Tensor& x);
// max(x, lo); the gradient passes where x > lo.
Tensor clamp_min(const Tensor& x, float lo);  // tanh approximation (GPT-2 / "gelu_pytorch_tanh")

// SwiGLU gating: silu(gate) * up, fused (one pass, no silu(gate) tensor kept).
Tensor swiglu(const Tensor& gate, const Tensor& up);

}  // namespace smelt::ops
