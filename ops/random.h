// Random tensors drawn on their device from a Philox stream: the same numbers as the host's
// Tensor::randn / Tensor::uniform for the same stream position, on every device (Philox is
// counter-based: block i of a stream is a pure function of (seed, offset + i)). The stream
// advances as if the host had drawn them.
#pragma once
#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace smelt::ops {

Tensor randn(const Shape& shape, Philox& rng, float mean, float std, Device device);
Tensor uniform(const Shape& shape, Philox& rng, float lo, float hi, Device device);

}  // namespace smelt::ops
