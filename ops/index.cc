// Indexing ops over contiguous [outer, n, inner] views of the indexed axis.
#include "ops/index.h"

#include <cstring>

#include "ops/common.h"
#include "ops/shape.h"
#include "runtime/thread_pool.h"

namespace smelt::ops {
namespace {

struct AxisSplit {
  int64_t outer = 1, inner = 1;
};

AxisSplit split_at(const Shape& s, int64_t dim) {
  AxisSplit a;
  for (int64_t i = 0; i < dim; ++i) a.outer *= s[i];
  for (size_t i = dim + 1; i < s.size(); ++i) a.inner *= s[i];
  return a;
}

int64_t checked_index(const Tensor& idx, int64_t i, int64_t n, const char* op) {
  int64_t v = index_at(idx, i);
  SMELT_CHECK(v >= 0 && v < n, op, ": index ", v, " out of range [0, ", n, ")");
  return v;
}

// out [outer, len(index), inner] += or = x [outer, n, inner] selected along the middle axis.
void select_rows(const float* x, float* out, const Tensor& index, int64_t outer, int64_t n, int64_t inner, const char* op) {
  const int64_t m = index.numel();
  for (int64_t j = 0; j < m; ++j) checked_index(index, j, n, op);
  parallel_for(0, outer * m, std::max<int64_t>(1, 4096 / std::max<int64_t>(inner, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      int64_t o = t / m, j = t % m;
      std::memcpy(out + (o * m + j) * inner, x + (o * n + index_at(index, j)) * inner, inner * sizeof(float));
    }
  });
}

// The adjoint of select_rows: dx [outer, n, inner] += g [outer, len(index), inner] at the selected rows.
void add_rows(const float* g, float* dx, const Tensor& index, int64_t outer, int64_t n, int64_t inner) {
  const int64_t m = index.numel();
  // Parallel over `outer` only: several j may hit the same row, so one thread owns each outer slice.
  parallel_for(0, outer, 1, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o)
      for (int64_t j = 0; j < m; ++j) {
        const float* src = g + (o * m + j) * inner;
        float* dst = dx + (o * n + index_at(index, j)) * inner;
        for (int64_t c = 0; c < inner; ++c) dst[c] += src[c];
      }
  });
}

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  check_weight(weight, "embedding", "weight");
  check_index(ids, "embedding", "ids");
  SMELT_CHECK(weight.dim() == 2, "embedding: weight must be [vocab, dim], got ", weight.str());
  Tensor flat = contiguous_data(reshape(ids.detach(), {ids.numel()}));
  const int64_t vocab = weight.size(0), dim = weight.size(1);
  for (int64_t i = 0; i < flat.numel(); ++i) {
    const int64_t id = index_at(flat, i);
    SMELT_CHECK(id >= 0 && id < vocab, "embedding: token id ", id, " (position ", i, ") out of range for a vocabulary of ", vocab);
  }
  Shape out_shape = ids.shape();
  out_shape.push_back(dim);
  if (weight.dtype() == DType::BF16) {  // a bf16 table (inference): rows widened to f32
    Tensor table = contiguous_data(weight), rows = Tensor::empty(out_shape);
    const uint16_t* src = table.data<uint16_t>();
    float* dst = rows.data<float>();
    parallel_for(0, flat.numel(), 64, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const uint16_t* row = src + index_at(flat, i) * dim;
        for (int64_t c = 0; c < dim; ++c) dst[i * dim + c] = bf16_to_f32(row[c]);
      }
    });
    return rows;
  }
  return reshape(index_select(weight, 0, flat), out_shape);
}

Tensor index_select(const Tensor& x, int64_t dim_in, const Tensor& index) {
  check_f32(x, "index_select", "x");
  check_index(index, "index_select", "index");
  SMELT_CHECK(index.dim() == 1, "index_select: index must be 1-D, got ", index.str());
  const int64_t dim = normalize_dim(dim_in, x.dim(), "index_select");
  Tensor xc = contiguous_data(x), ic = contiguous_data(index);
  AxisSplit s = split_at(x.shape(), dim);
  const int64_t n = x.shape()[dim];
  Shape out_shape = x.shape();
  out_shape[dim] = ic.numel();
  Tensor out = Tensor::empty(out_shape);
  select_rows(xc.data<float>(), out.data<float>(), ic, s.outer, n, s.inner, "index_select");
  if (!needs_grad({&x})) return out;
  Shape xs = x.shape();
  attach_grad_fn(out, "index_select", {x}, [=](const Tensor& g) {
    Tensor gc = contiguous_data(g);
    Tensor dx = Tensor::zeros(xs);
    add_rows(gc.data<float>(), dx.data<float>(), ic, s.outer, n, s.inner);
    return std::vector<Tensor>{dx};
  });
  return out;
}

namespace {
// Validates gather/scatter index shapes: same rank as x, equal sizes off `dim`.
void check_gather_shapes(const Tensor& x, int64_t dim, const Tensor& index, const char* op) {
  SMELT_CHECK(index.dim() == x.dim(), op, ": index ", index.str(), " must have the rank of ", x.str());
  for (int64_t i = 0; i < x.dim(); ++i)
    SMELT_CHECK(i == dim || index.shape()[i] == x.shape()[i], op, ": index ", index.str(), " differs from ", x.str(),
                " on axis ", i);
}

// For each position p of `index` (contiguous, split as [outer, m, inner]) calls fn(p, x_offset).
template <typename Fn>
void for_each_gathered(const Tensor& index, const Shape& x_shape, int64_t dim, const char* op, Fn&& fn) {
  AxisSplit s = split_at(index.shape(), dim);
  const int64_t m = index.shape()[dim], n = x_shape[dim];
  for (int64_t o = 0; o < s.outer; ++o)
    for (int64_t j = 0; j < m; ++j)
      for (int64_t c = 0; c < s.inner; ++c) {
        int64_t p = (o * m + j) * s.inner + c;
        int64_t v = checked_index(index, p, n, op);
        fn(p, (o * n + v) * s.inner + c);
      }
}
}  // namespace

Tensor gather(const Tensor& x, int64_t dim_in, const Tensor& index) {
  check_f32(x, "gather", "x");
  check_index(index, "gather", "index");
  const int64_t dim = normalize_dim(dim_in, x.dim(), "gather");
  check_gather_shapes(x, dim, index, "gather");
  Tensor xc = contiguous_data(x), ic = contiguous_data(index);
  Tensor out = Tensor::empty(index.shape());
  const float* px = xc.data<float>();
  float* po = out.data<float>();
  for_each_gathered(ic, x.shape(), dim, "gather", [&](int64_t p, int64_t xo) { po[p] = px[xo]; });
  if (!needs_grad({&x})) return out;
  Shape xs = x.shape();
  attach_grad_fn(out, "gather", {x}, [=](const Tensor& g) {
    Tensor gc = contiguous_data(g);
    Tensor dx = Tensor::zeros(xs);
    const float* pg = gc.data<float>();
    float* pd = dx.data<float>();
    for_each_gathered(ic, xs, dim, "gather", [&](int64_t p, int64_t xo) { pd[xo] += pg[p]; });
    return std::vector<Tensor>{dx};
  });
  return out;
}

Tensor scatter_add(const Tensor& x, int64_t dim_in, const Tensor& index, const Tensor& src) {
  check_f32(x, "scatter_add", "x");
  check_f32(src, "scatter_add", "src");
  check_index(index, "scatter_add", "index");
  const int64_t dim = normalize_dim(dim_in, x.dim(), "scatter_add");
  check_gather_shapes(x, dim, index, "scatter_add");
  SMELT_CHECK(src.shape() == index.shape(), "scatter_add: src ", src.str(), " must have the shape of index ", index.str());
  Tensor ic = contiguous_data(index), sc = contiguous_data(src);
  Tensor out = x.clone();
  const float* ps = sc.data<float>();
  float* po = out.data<float>();
  for_each_gathered(ic, x.shape(), dim, "scatter_add", [&](int64_t p, int64_t xo) { po[xo] += ps[p]; });
  if (!needs_grad({&x, &src})) return out;
  attach_grad_fn(out, "scatter_add", {x, src}, [=](const Tensor& g) {
    return std::vector<Tensor>{g, gather(g, dim, ic)};
  });
  return out;
}

}  // namespace smelt::ops
