// Reductions. One axis at a time over a contiguous [outer, n, inner] view; several axes are
// reduced one after another. Backward broadcasts the gradient back (a stride-0 view, then copy).
#include "ops/reduce.h"

#include <algorithm>
#include <limits>

#include "ops/common.h"
#include "ops/elementwise.h"
#include "ops/shape.h"
#include "runtime/thread_pool.h"

namespace smelt::ops {
namespace {

struct AxisView {
  int64_t outer = 1, n = 1, inner = 1;
};

AxisView axis_view(const Shape& s, int64_t dim) {
  AxisView v;
  for (int64_t i = 0; i < dim; ++i) v.outer *= s[i];
  v.n = s[dim];
  for (size_t i = dim + 1; i < s.size(); ++i) v.inner *= s[i];
  return v;
}

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
  Tensor xc = contiguous_data(x);
  AxisView v = axis_view(x.shape(), dim);
  Shape keep = reduced_shape(x.shape(), {dim}, true);
  Tensor out = Tensor::empty(keep);
  std::vector<int64_t> argmax(static_cast<size_t>(v.outer * v.inner));
  const float* px = xc.data<float>();
  float* po = out.data<float>();
  for (int64_t o = 0; o < v.outer; ++o)
    for (int64_t j = 0; j < v.inner; ++j) {
      float best = -std::numeric_limits<float>::infinity();
      int64_t at = 0;
      for (int64_t i = 0; i < v.n; ++i) {
        float val = px[(o * v.n + i) * v.inner + j];
        if (val > best || i == 0) { best = val; at = i; }
      }
      po[o * v.inner + j] = best;
      argmax[o * v.inner + j] = at;
    }
  Tensor result = keepdim ? out : reshape(out, reduced_shape(x.shape(), {dim}, false));
  if (!needs_grad({&x})) return result;
  Shape xs = x.shape();
  attach_grad_fn(result, "max", {x}, [xs, v, argmax](const Tensor& g) {
    Tensor gc = contiguous_data(g);
    Tensor dx = Tensor::zeros(xs);
    const float* pg = gc.data<float>();
    float* pd = dx.data<float>();
    for (int64_t o = 0; o < v.outer; ++o)
      for (int64_t j = 0; j < v.inner; ++j) pd[(o * v.n + argmax[o * v.inner + j]) * v.inner + j] = pg[o * v.inner + j];
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
