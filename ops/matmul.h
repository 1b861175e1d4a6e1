// Matrix products. Transposed operands are read in place: pass ops::transpose(w, 0, 1) and the
// GEMM reads it with the transposed layout, no copy.
#pragma once
#include <vector>

#include "runtime/tensor.h"

namespace smelt::ops {

// a [..., M, K] × b [K, N] or [..., K, N] (same leading dims) → [..., M, N]. b may be a bf16
// weight that needs no gradient (see check_weight); a and the result are f32.
Tensor matmul(const Tensor& a, const Tensor& b);
// x [..., in] × weight [out, in]^T (+ bias [out]) → [..., out]: the Linear layer.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
// linear(x, weights[i], biases[i]) for every i (biases may be empty, or undefined entries): one
// call where nothing needs a gradient and the backend runs the products together (the CPU in one
// parallel region: decoding's q, k and v, or gate and up), else one linear each.
std::vector<Tensor> linears(const Tensor& x, const std::vector<Tensor>& weights, const std::vector<Tensor>& biases = {});

}  // namespace smelt::ops
