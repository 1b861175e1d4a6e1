#include "ops/common.h"

#include <algorithm>

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

}  // namespace smelt::ops
