// The optimizer's arithmetic as ops on the parameters' device (not differentiable): the global
// gradient norm with its clip factor and non-finite flag kept as a tensor, and AdamW / SGD
// steps over every parameter in one backend call. optim/ decides what to call; nothing here is
// read back to the host.
#pragma once
#include <vector>

#include "ops/backend.h"

namespace smelt::ops {

// [norm, clip factor, non-finite flag] of the gradients (see OpTable::grad_norm).
Tensor grad_norm(const std::vector<Tensor>& grads, float max_norm);
// [norm, 1, non-finite flag, sum of squares hi, lo] (see OpTable::grad_norm's out [5]): for
// adding the norms of gradients held by different ranks.
Tensor grad_norm_with_squares(const std::vector<Tensor>& grads);
// grads ×= the clip factor (in place; nothing when the norm was not finite).
void scale_grads(const std::vector<Tensor>& grads, const Tensor& clip);
// In-place steps; `clip` (grad_norm's result, or undefined) scales the gradients as they are
// read and turns the step into nothing when the norm was not finite.
void adamw_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
                const std::vector<Tensor>& v, const AdamWStep& step, const Tensor& clip);
void sgd_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& buf, const SgdStep& step,
              const Tensor& clip);

}  // namespace smelt::ops
