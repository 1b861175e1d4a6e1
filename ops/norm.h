// Normalisation, rotary position embedding and softmax over the last dimension.
#pragma once
#include "runtime/tensor.h"

namespace smelt::ops {

// y = x / sqrt(mean(x², last dim) + eps) * weight; x [..., C], weight [C].
Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps);

// The residual stream's add fused into the norm that follows it: sum = x + y and
// normed = rms_norm(sum, weight, eps), in one pass over the rows. Gradients flow exactly as
// through rms_norm(add(x, y), weight, eps); x and y have the same shape.
struct ResidualNorm {
  Tensor sum, normed;
};
ResidualNorm add_rms_norm(const Tensor& x, const Tensor& y, const Tensor& weight, float eps);

// Rotary embedding (Hugging Face "rotate_half" layout: dim i pairs with i + D/2) on
// x [B, T, H, D]; token t sits at position (position_offset + t) / scaling.
Tensor rope(const Tensor& x, float theta, int64_t position_offset = 0, float scaling = 1.0f);
// The same, rotating x in place when the caller hands it over and nothing else holds it
// (q = rope(std::move(q), ...) on a fresh projection): no second [B, T, H, D] buffer.
Tensor rope(Tensor&& x, float theta, int64_t position_offset = 0, float scaling = 1.0f);

Tensor softmax(const Tensor& x);      // over the last dim
Tensor log_softmax(const Tensor& x);  // over the last dim

}  // namespace smelt::ops
