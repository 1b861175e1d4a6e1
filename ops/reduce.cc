// Reductions. One axis at a time over a contiguous [outer, n, inner] view; several axes are
// reduced one after another. Backward broadcasts the gradient back (a stride-0 view, then copy).
#include "ops/reduce.h"

#include <algorithm>

#include "ops/common.h"
#include "ops/elementwise.h"
#include "ops/shape.h"

namespace smelt::ops {
namespace {

// Sums contiguous x over `dim`, keeping the axis with size 1. No autograd.
Tensor sum_axis_keepdim(const Tensor& x, int64_t dim) {
  Shape out_shape = x.shape();
  out_shape[dim] = 1;
  Tensor out = Tensor::empty(out_shape, DType::F32, x.device());
  op_table(x.device(), OpKind::SumAxis, DType::F32).sum_axis(x, dim, out);
  return out;
}

std::vector<int64_t> normalized_dims(const std::vector<int64_t>& dims, int64_t nd, const char* op) {
  std::vector<int64_t> out;
  for (int64_t d : dims) out.push_back(normalize_dim(d, nd, op));
  std::sort(out.begin(), out.end());
  SMELT_CHECK(std::adjacent_find(out.begin(), out.end()) == out.end(), op, ": an axis is listed twice");
  return out;
}

Shape reduced_shape(const Shape& s, const std::vector<int64_t>& dims, bool keepdim) {
  Shape out;
  for (int64_t i = 0; i < static_cast<int64_t>(s.size()); ++i) {
    bool reduced = std::find(dims.begin(), dims.end(), i) != dims.end();
    if (!reduced) out.push_back(s[i]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

// Broadcasts a gradient of the reduced shape back over x's shape (as a contiguous copy).
Tensor expand_back(const Tensor& g, const Shape& x_shape, const std::vector<int64_t>& dims) {
  Tensor gk = reshape(g, reduced_shape(x_shape, dims, true));
  return contiguous(expand(gk, x_shape));
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  check_f32(x, "sum", "x");
  std::vector<int64_t> dims = normalized_dims(dims_in, x.dim(), "sum");
  Tensor r = contiguous_data(x);
  for (auto it = dims.rbegin(); it != dims.rend(); ++it) r = sum_axis_keepdim(r, *it);
  Tensor out = Tensor::view_of(r.storage(), reduced_shape(x.shape(), dims, keepdim),
                               contiguous_strides(reduced_shape(x.shape(), dims, keepdim)), r.offset(), DType::F32);
  if (!needs_grad({&x})) return out;
  Shape xs = x.shape();
  attach_grad_fn(out, "sum", {x}, [xs, dims](const Tensor& g) { return std::vector<Tensor>{expand_back(g, xs, dims)}; });
  return out;
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  std::vector<int64_t> nd = normalized_dims(dims, x.dim(), "mean");
  int64_t count = 1;
  for (int64_t d : nd) count *= x.shape()[d];
  return mul(sum(x, dims, keepdim), 1.0f / static_cast<float>(std::max<int64_t>(count, 1)));
}

Tensor sum(const Tensor& x) {
  std::vector<int64_t> all(x.dim());
  for (int64_t i = 0; i < x.dim(); ++i) all[i] = i;
  return sum(x, all, false);
}

Tensor mean(const Tensor& x) {
  return mul(sum(x), 1.0f / static_cast<float>(std::max<int64_t>(x.numel(), 1)));
}

Tensor max(const Tensor& x, int64_t dim_in, bool keepdim) {
  check_f32(x, "max", "x");
  const int64_t dim = normalize_dim(dim_in, x.dim(), "max");
  SMELT_CHECK(x.shape()[dim] > 0, "max: axis ", dim_in, " of ", x.str(), " is empty");
  const OpTable& B = op_table(x.device(), OpKind::MaxAxis, DType::F32);
  Tensor xc = contiguous_data(x);
  const Shape keep = reduced_shape(x.shape(), {dim}, true);
  Tensor out = Tensor::empty(keep, DType::F32, x.device());
  Tensor argmax = Tensor::empty(keep, DType::I64, x.device());
  B.max_axis(xc, dim, out, argmax);
  Tensor result = keepdim ? out : reshape(out, reduced_shape(x.shape(), {dim}, false));
  if (!needs_grad({&x})) return result;
  const Shape xs = x.shape();
  attach_grad_fn(result, "max", {x}, [xs, keep, dim, argmax](const Tensor& g) {
    // The gradient goes to each maximum's position: a scatter of g along dim.
    Tensor dx = Tensor::zeros(xs, DType::F32, g.device());
    op_table(g.device(), OpKind::ScatterAdd, DType::F32).scatter_add(dx, dim, argmax, contiguous_data(reshape(g, keep)));
    return std::vector<Tensor>{dx};
  });
  return result;
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  const int64_t lead = x.dim() - static_cast<int64_t>(shape.size());
  SMELT_CHECK(lead >= 0, "sum_to: cannot reduce ", x.str(), " to ", shape_str(shape));
  std::vector<int64_t> dims;
  for (int64_t i = 0; i < x.dim(); ++i) {
    if (i < lead) dims.push_back(i);
    else if (shape[i - lead] == 1 && x.shape()[i] != 1) dims.push_back(i);
    else SMELT_CHECK(shape[i - lead] == x.shape()[i], "sum_to: cannot reduce ", x.str(), " to ", shape_str(shape));
  }
  return reshape(sum(x, dims, true), shape);
}

}  // namespace smelt::ops
