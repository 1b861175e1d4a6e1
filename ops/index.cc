// Indexing ops: checks, one call to the device's op table, the backward beside each forward.
// Index values are checked by the backend as it reads them.
#include "ops/index.h"

#include "ops/common.h"
#include "ops/shape.h"

namespace smelt::ops {
namespace {
// Validates gather/scatter index shapes: same rank as x, equal sizes off `dim`.
void check_gather_shapes(const Tensor& x, int64_t dim, const Tensor& index, const char* op) {
  SMELT_CHECK(index.dim() == x.dim(), op, ": index ", index.str(), " must have the rank of ", x.str());
  for (int64_t i = 0; i < x.dim(); ++i)
    SMELT_CHECK(i == dim || index.shape()[i] == x.shape()[i], op, ": index ", index.str(), " differs from ", x.str(),
                " on axis ", i);
}

// x's entries index[j] along dim, as f32 (no autograd); `what` names the indices in errors.
Tensor select_along(const Tensor& x, int64_t dim, const Tensor& index, const char* what) {
  const OpTable& B = op_table(x.device(), OpKind::IndexSelect, x.dtype());
  Tensor xc = contiguous_data(x);
  Shape out_shape = x.shape();
  out_shape[dim] = index.numel();
  Tensor out = Tensor::empty(out_shape, DType::F32, x.device());
  B.index_select(xc, dim, index, out, what);
  return out;
}
}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  check_weight(weight, "embedding", "weight");
  check_index(ids, "embedding", "ids");
  check_same_device(weight, ids, "embedding");
  SMELT_CHECK(weight.dim() == 2, "embedding: weight must be [vocab, dim], got ", weight.str());
  Tensor flat = contiguous_data(reshape(ids.detach(), {ids.numel()}));
  Shape out_shape = ids.shape();
  out_shape.push_back(weight.size(1));
  if (weight.dtype() != DType::F32) return reshape(select_along(weight, 0, flat, "embedding: token id"), out_shape);
  return reshape(index_select(weight, 0, flat, "embedding: token id"), out_shape);
}

Tensor index_select(const Tensor& x, int64_t dim_in, const Tensor& index, const char* what) {
  check_f32(x, "index_select", "x");
  check_index(index, "index_select", "index");
  check_same_device(x, index, "index_select");
  SMELT_CHECK(index.dim() == 1, "index_select: index must be 1-D, got ", index.str());
  const int64_t dim = normalize_dim(dim_in, x.dim(), "index_select");
  Tensor ic = contiguous_data(index);
  Tensor out = select_along(x, dim, ic, what);
  if (!needs_grad({&x})) return out;
  Shape xs = x.shape();
  attach_grad_fn(out, "index_select", {x}, [=](const Tensor& g) {
    Tensor dx = Tensor::zeros(xs, DType::F32, g.device());
    op_table(g.device(), OpKind::IndexAdd, DType::F32).index_add(dx, dim, ic, contiguous_data(g));
    return std::vector<Tensor>{dx};
  });
  return out;
}

Tensor gather(const Tensor& x, int64_t dim_in, const Tensor& index) {
  check_f32(x, "gather", "x");
  check_index(index, "gather", "index");
  check_same_device(x, index, "gather");
  const int64_t dim = normalize_dim(dim_in, x.dim(), "gather");
  check_gather_shapes(x, dim, index, "gather");
  const OpTable& B = op_table(x.device(), OpKind::Gather, DType::F32);
  Tensor xc = contiguous_data(x), ic = contiguous_data(index);
  Tensor out = Tensor::empty(index.shape(), DType::F32, x.device());
  B.gather(xc, dim, ic, out);
  if (!needs_grad({&x})) return out;
  Shape xs = x.shape();
  attach_grad_fn(out, "gather", {x}, [=](const Tensor& g) {
    Tensor dx = Tensor::zeros(xs, DType::F32, g.device());
    op_table(g.device(), OpKind::ScatterAdd, DType::F32).scatter_add(dx, dim, ic, contiguous_data(g));
    return std::vector<Tensor>{dx};
  });
  return out;
}

Tensor scatter_add(const Tensor& x, int64_t dim_in, const Tensor& index, const Tensor& src) {
  check_f32(x, "scatter_add", "x");
  check_f32(src, "scatter_add", "src");
  check_index(index, "scatter_add", "index");
  check_same_device(x, index, "scatter_add");
  check_same_device(x, src, "scatter_add");
  const int64_t dim = normalize_dim(dim_in, x.dim(), "scatter_add");
  check_gather_shapes(x, dim, index, "scatter_add");
  SMELT_CHECK(src.shape() == index.shape(), "scatter_add: src ", src.str(), " must have the shape of index ", index.str());
  const OpTable& B = op_table(x.device(), OpKind::ScatterAdd, DType::F32);
  Tensor ic = contiguous_data(index), sc = contiguous_data(src);
  Tensor out = x.clone();
  B.scatter_add(out, dim, ic, sc);
  if (!needs_grad({&x, &src})) return out;
  attach_grad_fn(out, "scatter_add", {x, src}, [=](const Tensor& g) {
    return std::vector<Tensor>{g, gather(g, dim, ic)};
  });
  return out;
}

}  // namespace smelt::ops
