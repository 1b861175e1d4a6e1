// Reductions over one or more axes (negative axes count from the end). Differentiable.
#pragma once
#include <vector>

#include "runtime/tensor.h"

namespace smelt::ops {

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
// Maximum along one axis; the gradient flows to the first maximal element.
Tensor max(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor sum(const Tensor& x);   // all elements → scalar
Tensor mean(const Tensor& x);  // all elements → scalar
// Sums a broadcast result back to `shape` (the gradient of broadcasting).
Tensor sum_to(const Tensor& x, const Shape& shape);

}  // namespace smelt::ops
