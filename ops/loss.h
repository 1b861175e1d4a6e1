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

// cross_entropy(linear(hidden, weight), targets, ...) without the [N, V] logits: rows go through
// in chunks of `chunk_rows` (0: as many as fit 8 MiB of logits), and when grad is on each
// chunk's gradients w.r.t. hidden and weight are taken at once, so a training step keeps
// d hidden [N, C] and d weight [V, C] instead of logits and their gradient (2 × 64 MiB for the
// reference model's 4096 tokens × 4096 vocabulary). hidden [..., C], weight [V, C].
Tensor linear_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets, int64_t ignore_index = -100,
                            const Tensor& weights = Tensor(), int64_t chunk_rows = 0);

}  // namespace smelt::ops
