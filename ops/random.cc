#include "ops/random.h"

#include "ops/backend.h"

namespace smelt::ops {
namespace {
Tensor draw(const Shape& shape, Philox& rng, bool normal, float a, float b, Device device) {
  const OpTable& B = op_table(device, OpKind::RandomFill, DType::F32);
  Tensor out = Tensor::empty(shape, DType::F32, device);
  B.random_fill(out, rng.seed(), rng.offset(), normal, a, b);
  rng.set_offset(rng.offset() + static_cast<uint64_t>((out.numel() + 3) / 4));  // 4 numbers a block, as on the host
  return out;
}
}  // namespace

Tensor randn(const Shape& shape, Philox& rng, float mean, float std, Device device) { return draw(shape, rng, true, mean, std, device); }
Tensor uniform(const Shape& shape, Philox& rng, float lo, float hi, Device device) { return draw(shape, rng, false, lo, hi, device); }

}  // namespace smelt::ops
