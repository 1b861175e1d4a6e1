// Views and layout ops. reshape/permute/transpose/slice/expand return views where the layout
// allows (no copy); contiguous() and cat() copy. All differentiable.
#pragma once
#include <vector>

#include "runtime/tensor.h"

namespace smelt::ops {

Tensor reshape(const Tensor& x, Shape shape);  // one dim may be -1
Tensor permute(const Tensor& x, const std::vector<int64_t>& order);
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor expand(const Tensor& x, const Shape& shape);  // broadcast view (stride 0)
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor squeeze(const Tensor& x, int64_t dim);
Tensor contiguous(const Tensor& x);  // x itself if already contiguous
Tensor cat(const std::vector<Tensor>& xs, int64_t dim);

// Normalises a possibly negative axis against rank `nd`; throws naming the op on range errors.
int64_t normalize_dim(int64_t dim, int64_t nd, const char* op);

}  // namespace smelt::ops
