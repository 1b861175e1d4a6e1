// matmul: forward is one GEMM per batch entry (one GEMM in all when b is a shared 2-D matrix and
// a's rows are contiguous); backward is two more matmuls on transposed views.
#include "ops/matmul.h"

#include "ops/common.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "runtime/strided.h"

namespace smelt::ops {
namespace {

// How the GEMM reads the last two dims of a view: leading dimension and whether transposed.
struct MatrixLayout {
  bool ok = false;
  bool trans = false;
  int64_t ld = 0;
};

MatrixLayout layout_of(const Tensor& t) {
  const int64_t nd = t.dim();
  const int64_t rows = t.shape()[nd - 2], cols = t.shape()[nd - 1];
  const int64_t rs = t.strides()[nd - 2], cs = t.strides()[nd - 1];
  if ((cs == 1 || cols == 1) && rs >= std::max<int64_t>(cols, 1)) return {true, false, rs};
  if ((rs == 1 || rows == 1) && cs >= std::max<int64_t>(rows, 1)) return {true, true, cs};
  if (rows == 1 && cols == 1) return {true, false, 1};
  return {};
}

// Makes the last two dims GEMM-readable, copying only when the layout is neither form.
Tensor gemm_readable(const Tensor& t) { return layout_of(t).ok ? t : t.clone(); }

Tensor matmul_forward(const Tensor& a_in, const Tensor& b_in) {
  check_f32(a_in, "matmul", "a");
  check_weight(b_in, "matmul", "b");
  check_same_device(a_in, b_in, "matmul");
  SMELT_CHECK(a_in.dim() >= 2 && b_in.dim() >= 2, "matmul: operands need rank ≥ 2, got ", a_in.str(), " and ", b_in.str());
  const int64_t M = a_in.size(-2), K = a_in.size(-1), N = b_in.size(-1);
  SMELT_CHECK(b_in.size(-2) == K, "matmul: inner dimensions differ: ", a_in.str(), " × ", b_in.str());
  Shape batch(a_in.shape().begin(), a_in.shape().end() - 2);
  if (b_in.dim() > 2) {
    Shape bb(b_in.shape().begin(), b_in.shape().end() - 2);
    SMELT_CHECK(bb == batch, "matmul: batch dims differ: ", a_in.str(), " × ", b_in.str());
  }
  const KernelTable& K_ = kernels_for(a_in.device());
  Tensor a = gemm_readable(a_in), b = gemm_readable(b_in);
  Shape out_shape = batch;
  out_shape.push_back(M);
  out_shape.push_back(N);
  Tensor out = Tensor::empty(out_shape);
  MatrixLayout la = layout_of(a), lb = layout_of(b);
  const float* pa = a.data<float>();
  float* po = out.data<float>();
  const int64_t batch_count = shape_numel(batch);
  // Shared 2-D b and a contiguous batch of row-major matrices: one tall GEMM.
  if (b.dim() == 2 && !la.trans && a.is_contiguous()) {
    GemmArgs g;
    g.m = batch_count * M; g.n = N; g.k = K;
    g.a = pa; g.lda = K;
    set_gemm_b(g, b);
    g.ldb = lb.ld; g.trans_b = lb.trans;
    g.c = po; g.ldc = N;
    K_.gemm(g);
    return out;
  }
  // Otherwise one GEMM per batch entry; batch offsets follow each operand's strides.
  Shape a_bstrides(a.strides().begin(), a.strides().end() - 2);
  Shape b_bstrides = b.dim() > 2 ? Shape(b.strides().begin(), b.strides().end() - 2) : Shape(batch.size(), 0);
  Shape o_bstrides(out.strides().begin(), out.strides().end() - 2);
  std::vector<int64_t> idx(batch.size(), 0);
  for (int64_t i = 0; i < batch_count; ++i) {
    int64_t oa = 0, ob = 0, oo = 0;
    for (size_t d = 0; d < batch.size(); ++d) {
      oa += idx[d] * a_bstrides[d];
      ob += idx[d] * b_bstrides[d];
      oo += idx[d] * o_bstrides[d];
    }
    GemmArgs g;
    g.m = M; g.n = N; g.k = K;
    g.a = pa + oa; g.lda = la.ld; g.trans_a = la.trans;
    set_gemm_b(g, b, ob);
    g.ldb = lb.ld; g.trans_b = lb.trans;
    g.c = po + oo; g.ldc = N;
    K_.gemm(g);
    for (int64_t d = static_cast<int64_t>(batch.size()) - 1; d >= 0; --d) {
      if (++idx[d] < batch[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  Tensor out = matmul_forward(a, b);
  if (!needs_grad({&a, &b})) return out;
  SavedTensor A(a, "matmul"), B(b, "matmul");
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  attach_grad_fn(out, "matmul", {a, b}, [=](const Tensor& g) {
    const Tensor& av = A.get();
    const Tensor& bv = B.get();
    Tensor ga, gb;
    if (need_a) ga = matmul_forward(g, transpose(bv.detach(), -1, -2));  // dA = g · Bᵀ
    if (need_b) {
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

}  // namespace smelt::ops
