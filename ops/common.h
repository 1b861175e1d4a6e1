// Helpers shared by the op implementations (internal to ops/): argument checks, contiguous data,
// how a GEMM reads a view's last two dims and a batched matmul's entries, and a reduction's axis.
#pragma once
#include <functional>

#include "autograd/node.h"
#include "ops/backend.h"
#include "runtime/tensor.h"

namespace smelt::ops {

// Throws unless `t` is a defined f32 tensor; names the op and the argument.
void check_f32(const Tensor& t, const char* op, const char* arg);
// Throws unless `t` is f32, or a bf16 weight that needs no gradient (inference with weights kept
// in bf16: the op widens them as it reads them; training them needs f32).
void check_weight(const Tensor& t, const char* op, const char* arg);
// How a GEMM reads the last two dims of a view: leading dimension and whether transposed; ok is
// false when the view is neither row- nor column-major (it must be copied first).
struct MatrixLayout {
  bool ok = false;
  bool trans = false;
  int64_t ld = 0;
};
MatrixLayout matrix_layout(const Tensor& t);
// Each entry of a batched matmul a [..., M, K] · b [..., K, N] (or a shared 2-D b) → out, in
// row-major batch order: fn(a's, b's and out's element offset of that entry).
void for_each_matmul_batch(const Tensor& a, const Tensor& b, const Tensor& out, const std::function<void(int64_t, int64_t, int64_t)>& fn);

// A contiguous tensor as [outer, n, inner] around axis `dim`: what a reduction over it walks.
struct AxisView {
  int64_t outer = 1, n = 1, inner = 1;
};
AxisView axis_view(const Shape& s, int64_t dim);

// Throws unless `t` holds integer indices (i32 or i64).
void check_index(const Tensor& t, const char* op, const char* arg);
void check_same_device(const Tensor& a, const Tensor& b, const char* op);
// Contiguous version of t (a no-op when already contiguous). Not recorded for autograd.
Tensor contiguous_data(const Tensor& t);

}  // namespace smelt::ops
