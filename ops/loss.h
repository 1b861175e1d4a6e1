// Losses.
#pragma once
#include "runtime/tensor.h"

namespace smelt::ops {

// Mean next-token cross-entropy. logits [N, V] (or [..., V], flattened), targets [N] integer.
// Rows whose target equals `ignore_index` count for nothing; `weights` [N] (optional, ≥ 0) is a
// per-token loss mask, and the mean is over the total weight of counted rows (0 when none count).
// The log-softmax is fused: no probability tensor is kept; backward recomputes it per row.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100,
                     const Tensor& weights = Tensor());

}  // namespace smelt::ops
