#include "ops/common.h"

#include <algorithm>
#include <vector>

namespace smelt::ops {

void check_f32(const Tensor& t, const char* op, const char* arg) {
  SMELT_CHECK(t.defined(), op, ": argument '", arg, "' is undefined");
  SMELT_CHECK(t.dtype() == DType::F32, op, ": argument '", arg, "' must be f32, got ", t.str(),
              " (convert with .to(DType::F32))");
}

void check_weight(const Tensor& t, const char* op, const char* arg) {
  SMELT_CHECK(t.defined(), op, ": argument '", arg, "' is undefined");
  SMELT_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16 || is_quantized(t.dtype()), op, ": argument '", arg,
              "' must be f32, bf16, q8_0 or q4_0, got ", t.str());
  SMELT_CHECK(t.dtype() == DType::F32 || !t.requires_grad(), op, ": argument '", arg, "' is ", dtype_name(t.dtype()), " and requires grad; ",
              dtype_name(t.dtype()), " weights are for inference (train in f32)");
}

MatrixLayout matrix_layout(const Tensor& t) {
  const int64_t nd = t.dim();
  const int64_t rows = t.shape()[nd - 2], cols = t.shape()[nd - 1];
  const int64_t rs = t.strides()[nd - 2], cs = t.strides()[nd - 1];
  if ((cs == 1 || cols == 1) && rs >= std::max<int64_t>(cols, 1)) return {true, false, rs};
  if ((rs == 1 || rows == 1) && cs >= std::max<int64_t>(rows, 1)) return {true, true, cs};
  if (rows == 1 && cols == 1) return {true, false, 1};
  return {};
}

void check_index(const Tensor& t, const char* op, const char* arg) {
  SMELT_CHECK(t.defined(), op, ": argument '", arg, "' is undefined");
  SMELT_CHECK(t.dtype() == DType::I32 || t.dtype() == DType::I64, op, ": argument '", arg,
              "' must hold indices (i32 or i64), got ", t.str());
}

void check_same_device(const Tensor& a, const Tensor& b, const char* op) {
  SMELT_CHECK(a.device() == b.device(), op, ": arguments on different devices (", a.device().str(), " and ",
              b.device().str(), ")");
}

Tensor contiguous_data(const Tensor& t) { return t.is_contiguous() ? t.detach() : t.clone(); }

void for_each_matmul_batch(const Tensor& a, const Tensor& b, const Tensor& out, const std::function<void(int64_t, int64_t, int64_t)>& fn) {
  const Shape batch(a.shape().begin(), a.shape().end() - 2);
  const Shape a_bstrides(a.strides().begin(), a.strides().end() - 2);
  const Shape b_bstrides = b.dim() > 2 ? Shape(b.strides().begin(), b.strides().end() - 2) : Shape(batch.size(), 0);
  const Shape o_bstrides(out.strides().begin(), out.strides().end() - 2);
  std::vector<int64_t> idx(batch.size(), 0);
  for (int64_t i = 0; i < shape_numel(batch); ++i) {
    int64_t oa = 0, ob = 0, oo = 0;
    for (size_t d = 0; d < batch.size(); ++d) {
      oa += idx[d] * a_bstrides[d];
      ob += idx[d] * b_bstrides[d];
      oo += idx[d] * o_bstrides[d];
    }
    fn(oa, ob, oo);
    for (int64_t d = static_cast<int64_t>(batch.size()) - 1; d >= 0; --d) {
      if (++idx[d] < batch[d]) break;
      idx[d] = 0;
    }
  }
}

AxisView axis_view(const Shape& s, int64_t dim) {
  AxisView v;
  for (int64_t i = 0; i < dim; ++i) v.outer *= s[i];
  v.n = s[dim];
  for (size_t i = dim + 1; i < s.size(); ++i) v.inner *= s[i];
  return v;
}

}  // namespace smelt::ops
