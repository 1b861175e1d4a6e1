// matmul: the forward is one batched GEMM on the device (ops/backend.h); the backward is two more
// matmuls on transposed views.
#include "ops/matmul.h"

#include "ops/common.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/shape.h"

namespace smelt::ops {
namespace {

// Makes the last two dims GEMM-readable, copying only when the layout is neither form.
Tensor gemm_readable(const Tensor& t) { return matrix_layout(t).ok ? t : t.clone(); }

Tensor matmul_forward(const Tensor& a_in, const Tensor& b_in) {
  check_f32(a_in, "matmul", "a");
  check_weight(b_in, "matmul", "b");
  check_same_device(a_in, b_in, "matmul");
  SMELT_CHECK(a_in.dim() >= 2 && b_in.dim() >= 2, "matmul: operands need rank ≥ 2, got ", a_in.str(), " and ", b_in.str());
  const int64_t M = a_in.size(-2), K = a_in.size(-1), N = b_in.size(-1);
  SMELT_CHECK(b_in.size(-2) == K, "matmul: inner dimensions differ: ", a_in.str(), " × ", b_in.str());
  SMELT_CHECK(!is_quantized(b_in.dtype()) || matrix_layout(b_in).trans, "matmul: a ", dtype_name(b_in.dtype()),
              " b must be a transposed weight (blocks run along its rows: x · Wᵀ), got ", b_in.str());
  Shape batch(a_in.shape().begin(), a_in.shape().end() - 2);
  if (b_in.dim() > 2) {
    Shape bb(b_in.shape().begin(), b_in.shape().end() - 2);
    SMELT_CHECK(bb == batch, "matmul: batch dims differ: ", a_in.str(), " × ", b_in.str());
  }
  const OpTable& B = op_table(a_in.device(), OpKind::Matmul, b_in.dtype());
  Shape out_shape = batch;
  out_shape.push_back(M);
  out_shape.push_back(N);
  Tensor out = Tensor::empty(out_shape, DType::F32, a_in.device());
  B.matmul(gemm_readable(a_in), gemm_readable(b_in), out);
  return out;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  Tensor out = matmul_forward(a, b);
  if (!needs_grad({&a, &b})) return out;
  SavedTensor A(a, "matmul", is_activation(a)), B(b, "matmul");  // a: the activation (x of x · Wᵀ)
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  attach_grad_fn(out, "matmul", {a, b}, [=](const Tensor& g) {
    Tensor ga, gb;
    if (need_a) ga = matmul_forward(g, transpose(B.get().detach(), -1, -2));  // dA = g · Bᵀ
    if (need_b) {
      const Tensor av = A.get();  // widened here only (a bf16 copy under mixed precision)
      const Tensor bv = B.get();
      if (bv.dim() == 2 && av.dim() > 2) {
        // b shared across the batch: dB = Σ_batch Aᵀ g = (A as [rows, K])ᵀ · (g as [rows, N])
        Tensor a2 = reshape(av.detach(), {-1, av.size(-1)});
        Tensor g2 = reshape(g, {-1, g.size(-1)});
        gb = matmul_forward(transpose(a2, 0, 1), g2);
      } else {
        gb = matmul_forward(transpose(av.detach(), -1, -2), g);  // dB = Aᵀ · g
      }
    }
    return std::vector<Tensor>{ga, gb};
  });
  return out;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  SMELT_CHECK(weight.dim() == 2, "linear: weight must be [out, in], got ", weight.str());
  SMELT_CHECK(x.size(-1) == weight.size(1), "linear: input ", x.str(), " does not match weight ", weight.str());
  Tensor y = matmul(x, transpose(weight, 0, 1));
  return bias.defined() ? add(y, bias) : y;
}

std::vector<Tensor> linears(const Tensor& x, const std::vector<Tensor>& weights, const std::vector<Tensor>& biases) {
  SMELT_CHECK(biases.empty() || biases.size() == weights.size(), "linears: ", biases.size(), " biases for ", weights.size(), " weights");
  auto bias = [&](size_t i) { return biases.empty() ? Tensor() : biases[i]; };
  std::vector<Tensor> out;
  bool together = !weights.empty() && x.dtype() == DType::F32 && !needs_grad({&x}) && !needs_grad(weights);
  for (const Tensor& w : weights)
    together = together && w.dim() == 2 && w.is_contiguous() && w.dtype() == weights[0].dtype() && w.device() == x.device() &&
               x.size(-1) == w.size(1);
  const OpTable* B = together ? &op_table(x.device(), OpKind::Matmul, weights[0].dtype()) : nullptr;
  if (!B || !B->matmul_many) {
    for (size_t i = 0; i < weights.size(); ++i) out.push_back(linear(x, weights[i], bias(i)));
    return out;
  }
  const Tensor a = reshape(x.is_contiguous() ? x : x.clone(), {-1, x.size(-1)});
  Shape shape = x.shape();
  for (const Tensor& w : weights) out.push_back(Tensor::empty({a.size(0), w.size(0)}, DType::F32, x.device()));
  B->matmul_many(a, weights, out);
  for (size_t i = 0; i < weights.size(); ++i) {
    shape.back() = weights[i].size(0);
    out[i] = reshape(out[i], shape);
    if (bias(i).defined()) out[i] = add(out[i], bias(i));
  }
  return out;
}

}  // namespace smelt::ops
