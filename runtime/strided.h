// Walking N-dimensional strided layouts: calls a row function for each run along the last
// dimension, so inner loops stay simple 1-D loops over (pointer, stride) pairs.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "runtime/tensor.h"

namespace smelt {

// Strides that make `t` (shape of rank ≤ out.size()) read as if broadcast to `out`:
// missing leading dims and size-1 dims get stride 0.
Shape broadcast_strides(const Tensor& t, const Shape& out);
// numpy broadcasting of two shapes; throws with both shapes on mismatch.
Shape broadcast_shapes(const Shape& a, const Shape& b);

// For each row (all dims but the last) of `shape`, calls row(offsets, n) where offsets[k] is the
// element offset of operand k at the row start; operand k advances by strides[k].back() per element.
template <size_t K, typename RowFn>
void for_each_row(const Shape& shape, const std::array<const Shape*, K>& strides, const std::array<int64_t, K>& base, RowFn&& row) {
  const int64_t nd = static_cast<int64_t>(shape.size());
  if (shape_numel(shape) == 0) return;
  if (nd == 0) {
    row(base, int64_t{1});
    return;
  }
  const int64_t n = shape[nd - 1];
  std::vector<int64_t> idx(nd > 1 ? nd - 1 : 0, 0);
  std::array<int64_t, K> off = base;
  for (;;) {
    row(off, n);
    // increment the multi-index over dims [0, nd-1)
    int64_t d = nd - 2;
    for (; d >= 0; --d) {
      ++idx[d];
      for (size_t k = 0; k < K; ++k) off[k] += (*strides[k])[d];
      if (idx[d] < shape[d]) break;
      for (size_t k = 0; k < K; ++k) off[k] -= (*strides[k])[d] * shape[d];
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

}  // namespace smelt
