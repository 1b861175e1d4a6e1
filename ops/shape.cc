// Layout ops. Views share storage; their backward maps the gradient back to the input layout.
#include "ops/shape.h"

#include <numeric>

#include "ops/common.h"
#include "ops/reduce.h"

namespace smelt::ops {

int64_t normalize_dim(int64_t dim, int64_t nd, const char* op) {
  int64_t d = dim < 0 ? dim + nd : dim;
  SMELT_CHECK(d >= 0 && d < nd, op, ": axis ", dim, " out of range for rank ", nd);
  return d;
}

namespace {
Tensor make_view(const Tensor& x, const Shape& shape, const Shape& strides, int64_t offset) {
  return Tensor::view_of(x.storage(), shape, strides, offset, x.dtype());
}
}  // namespace

Tensor reshape(const Tensor& x, Shape shape) {
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      SMELT_CHECK(infer < 0, "reshape: more than one -1 in ", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    SMELT_CHECK(known > 0 && x.numel() % known == 0, "reshape: cannot reshape ", x.str(), " to ", shape_str(shape));
    shape[infer] = x.numel() / known;
  }
  SMELT_CHECK(shape_numel(shape) == x.numel(), "reshape: cannot reshape ", x.str(), " (", x.numel(), " elements) to ",
              shape_str(shape));
  Tensor base = x.is_contiguous() ? x.detach() : x.clone();
  Tensor out = make_view(base, shape, contiguous_strides(shape), base.offset());
  if (needs_grad({&x})) {
    Shape xs = x.shape();
    attach_grad_fn(out, "reshape", {x}, [xs](const Tensor& g) { return std::vector<Tensor>{reshape(g, xs)}; });
  }
  return out;
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& order) {
  const int64_t nd = x.dim();
  SMELT_CHECK(static_cast<int64_t>(order.size()) == nd, "permute: order has ", order.size(), " axes for ", x.str());
  std::vector<int64_t> inverse(nd, -1);
  Shape shape(nd), strides(nd);
  for (int64_t i = 0; i < nd; ++i) {
    int64_t d = normalize_dim(order[i], nd, "permute");
    SMELT_CHECK(inverse[d] < 0, "permute: axis ", d, " appears twice");
    inverse[d] = i;
    shape[i] = x.shape()[d];
    strides[i] = x.strides()[d];
  }
  Tensor out = make_view(x, shape, strides, x.offset());
  if (needs_grad({&x})) attach_grad_fn(out, "permute", {x}, [inverse](const Tensor& g) { return std::vector<Tensor>{permute(g, inverse)}; });
  return out;
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  std::vector<int64_t> order(x.dim());
  std::iota(order.begin(), order.end(), 0);
  std::swap(order[normalize_dim(d0, x.dim(), "transpose")], order[normalize_dim(d1, x.dim(), "transpose")]);
  return permute(x, order);
}

Tensor slice(const Tensor& x, int64_t dim_in, int64_t start, int64_t end, int64_t step) {
  const int64_t dim = normalize_dim(dim_in, x.dim(), "slice");
  const int64_t n = x.shape()[dim];
  SMELT_CHECK(step > 0, "slice: step must be positive, got ", step);
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape shape = x.shape(), strides = x.strides();
  shape[dim] = (end - start + step - 1) / step;
  strides[dim] *= step;
  Tensor out = make_view(x, shape, strides, x.offset() + start * x.strides()[dim]);
  if (needs_grad({&x})) {
    Shape xs = x.shape();
    attach_grad_fn(out, "slice", {x}, [=](const Tensor& g) {
      // Scatter g into the same window of a zero tensor laid out contiguously.
      Tensor dx = Tensor::zeros(xs, DType::F32, g.device());
      Shape ws = contiguous_strides(xs);
      const int64_t window_offset = start * ws[dim];
      ws[dim] *= step;
      Tensor window = make_view(dx, shape, ws, window_offset);
      window.copy_from(g);
      return std::vector<Tensor>{dx};
    });
  }
  return out;
}

Tensor expand(const Tensor& x, const Shape& shape) {
  SMELT_CHECK(static_cast<int64_t>(shape.size()) >= x.dim(), "expand: cannot expand ", x.str(), " to ", shape_str(shape));
  Shape strides(shape.size(), 0);
  const size_t lead = shape.size() - x.dim();
  for (size_t i = 0; i < static_cast<size_t>(x.dim()); ++i) {
    SMELT_CHECK(x.shape()[i] == shape[lead + i] || x.shape()[i] == 1, "expand: cannot expand ", x.str(), " to ", shape_str(shape));
    strides[lead + i] = x.shape()[i] == 1 ? 0 : x.strides()[i];
  }
  Tensor out = make_view(x, shape, strides, x.offset());
  if (needs_grad({&x})) {
    Shape xs = x.shape();
    attach_grad_fn(out, "expand", {x}, [xs](const Tensor& g) { return std::vector<Tensor>{sum_to(g, xs)}; });
  }
  return out;
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  Shape s = x.shape();
  int64_t d = normalize_dim(dim, x.dim() + 1, "unsqueeze");
  s.insert(s.begin() + d, 1);
  return reshape(x, s);
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  int64_t d = normalize_dim(dim, x.dim(), "squeeze");
  SMELT_CHECK(x.shape()[d] == 1, "squeeze: axis ", dim, " of ", x.str(), " has size ", x.shape()[d], ", not 1");
  Shape s = x.shape();
  s.erase(s.begin() + d);
  return reshape(x, s);
}

Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x;
  Tensor out = x.clone();
  if (needs_grad({&x})) attach_grad_fn(out, "contiguous", {x}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  return out;
}

Tensor cat(const std::vector<Tensor>& xs, int64_t dim_in) {
  SMELT_CHECK(!xs.empty(), "cat: no tensors given");
  const int64_t dim = normalize_dim(dim_in, xs[0].dim(), "cat");
  Shape out_shape = xs[0].shape();
  out_shape[dim] = 0;
  for (const Tensor& t : xs) {
    SMELT_CHECK(t.dim() == xs[0].dim() && t.dtype() == xs[0].dtype(), "cat: ", t.str(), " does not match ", xs[0].str());
    for (int64_t i = 0; i < t.dim(); ++i)
      SMELT_CHECK(i == dim || t.shape()[i] == xs[0].shape()[i], "cat: ", t.str(), " does not match ", xs[0].str(), " outside axis ", dim);
    out_shape[dim] += t.shape()[dim];
  }
  for (const Tensor& t : xs) check_same_device(t, xs[0], "cat");
  Tensor out = Tensor::empty(out_shape, xs[0].dtype(), xs[0].device());
  std::vector<int64_t> sizes;
  int64_t at = 0;
  for (const Tensor& t : xs) {
    Shape st = out.strides();
    Tensor window = make_view(out, t.shape(), st, at * st[dim]);
    window.copy_from(t);
    sizes.push_back(t.shape()[dim]);
    at += t.shape()[dim];
  }
  if (needs_grad(xs)) {
    attach_grad_fn(out, "cat", xs, [sizes, dim](const Tensor& g) {
      std::vector<Tensor> grads;
      int64_t pos = 0;
      for (int64_t s : sizes) {
        grads.push_back(contiguous(slice(g, dim, pos, pos + s)));
        pos += s;
      }
      return grads;
    });
  }
  return out;
}

}  // namespace smelt::ops
