// Indexing ops. Indices are i32 or i64 tensors; out-of-range indices are errors naming the value.
#pragma once
#include "runtime/tensor.h"

namespace smelt::ops {

// weight [V, C], ids [...] → [..., C]
Tensor embedding(const Tensor& weight, const Tensor& ids);
// Selects entries of `index` (1-D) along `dim`; `what` names the indices in an out-of-range error.
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index, const char* what = "index_select: index");
// out[..i.., j, ..k..] = x[..i.., index[..i.., j, ..k..], ..k..]; index has x's rank and shape except along dim.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
// A copy of x with src added at positions given by index along dim (the adjoint of gather).
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);

}  // namespace smelt::ops
