// rms_norm, rope, softmax and log_softmax: each forward with its backward below it.
#include "ops/norm.h"

#include <cmath>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "ops/common.h"
#include "runtime/thread_pool.h"

namespace smelt::ops {

namespace {

void check_rms_norm_args(const Tensor& x, const Tensor& weight, float eps, const char* op) {
  check_f32(x, op, "x");
  check_f32(weight, op, "weight");
  const int64_t C = x.size(-1);
  SMELT_CHECK(weight.dim() == 1 && weight.size(0) == C, op, ": weight ", weight.str(), " does not match input ", x.str());
  SMELT_CHECK(eps >= 0.0f, op, ": eps must be ≥ 0, got ", eps);
}

// Backward of out = rms_norm(x) · weight, where xc is x's contiguous data and rstd the rows'
// reciprocal RMS from the forward.
void attach_rms_norm_backward(const Tensor& out, const Tensor& x, const Tensor& xc, const Tensor& weight, const Tensor& wc,
                              const Tensor& rstd) {
  const int64_t C = x.size(-1);
  SavedTensor X(xc, "rms_norm", is_activation(x)), W(wc, "rms_norm");
  const bool need_w = weight.requires_grad();
  attach_grad_fn(out, "rms_norm", {x, weight}, [=](const Tensor& g) {
    Tensor gc = contiguous_data(g), xs = X.get(), ws = W.get();
    Tensor dx = Tensor::empty(xs.shape(), DType::F32, xs.device());
    Tensor dw = need_w ? Tensor::empty({C}, DType::F32, xs.device()) : Tensor();
    op_table(xs.device(), OpKind::RmsNormBackward, DType::F32).rms_norm_backward(xs, ws, rstd, gc, dx, dw);
    return std::vector<Tensor>{dx, dw};
  });
}

}  // namespace

Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps) {
  check_rms_norm_args(x, weight, eps, "rms_norm");
  const OpTable& B = op_table(x.device(), OpKind::RmsNorm, DType::F32);
  const int64_t C = x.size(-1), rows = x.numel() / std::max<int64_t>(C, 1);
  Tensor xc = contiguous_data(x), wc = contiguous_data(weight);
  Tensor out = Tensor::empty(x.shape(), DType::F32, x.device());
  Tensor rstd = Tensor::empty({rows}, DType::F32, x.device());
  B.rms_norm(xc, Tensor(), wc, eps, Tensor(), out, rstd);
  if (needs_grad({&x, &weight})) attach_rms_norm_backward(out, x, xc, weight, wc, rstd);
  return out;
}

ResidualNorm add_rms_norm(const Tensor& x, const Tensor& y, const Tensor& weight, float eps) {
  check_rms_norm_args(x, weight, eps, "add_rms_norm");
  check_f32(y, "add_rms_norm", "y");
  check_same_device(x, y, "add_rms_norm");
  SMELT_CHECK(x.shape() == y.shape(), "add_rms_norm: x ", x.str(), " and y ", y.str(), " differ in shape");
  const OpTable& B = op_table(x.device(), OpKind::RmsNorm, DType::F32);
  const int64_t C = x.size(-1), rows = x.numel() / std::max<int64_t>(C, 1);
  Tensor xc = contiguous_data(x), yc = contiguous_data(y), wc = contiguous_data(weight);
  ResidualNorm r{Tensor::empty(x.shape(), DType::F32, x.device()), Tensor::empty(x.shape(), DType::F32, x.device())};
  Tensor rstd = Tensor::empty({rows}, DType::F32, x.device());
  B.rms_norm(xc, yc, wc, eps, r.sum, r.normed, rstd);
  if (needs_grad({&x, &y})) attach_grad_fn(r.sum, "add", {x, y}, [](const Tensor& g) { return std::vector<Tensor>{g, g}; });
  if (needs_grad({&x, &y, &weight})) attach_rms_norm_backward(r.normed, r.sum, r.sum, weight, wc, rstd);
  return r;
}

namespace {
// cos/sin of every (position, frequency) pair, [T, D/2] each, for positions offset..offset+T-1,
// on the device that rotates with them.
struct RopeTable {
  int64_t T, D, offset;
  float theta, scaling;
  Device device;
  Tensor cos, sin;
};

std::shared_ptr<const RopeTable> make_rope_table(int64_t T, int64_t D, float theta, int64_t offset, float scaling, Device device) {
  const int64_t half = D / 2;
  std::vector<float> cs(T * half), sn(T * half);
  for (int64_t i = 0; i < half; ++i) {
    const double inv_freq = std::pow(static_cast<double>(theta), -2.0 * i / static_cast<double>(D));
    for (int64_t t = 0; t < T; ++t) {
      const double angle = static_cast<double>(offset + t) / scaling * inv_freq;
      cs[t * half + i] = static_cast<float>(std::cos(angle));
      sn[t * half + i] = static_cast<float>(std::sin(angle));
    }
  }
  return std::make_shared<RopeTable>(RopeTable{T, D, offset, theta, scaling, device, Tensor::from_vector(cs, {T, half}, device),
                                               Tensor::from_vector(sn, {T, half}, device)});
}

// Every layer of every training step asks for the same table: the last few made are kept, if
// small (a table of T = 4096, D = 128 is 2 MiB; longer ones are made per call).
std::shared_ptr<const RopeTable> rope_table(int64_t T, int64_t D, float theta, int64_t offset, float scaling, Device device) {
  static std::mutex mu;
  static std::deque<std::shared_ptr<const RopeTable>> recent;
  constexpr size_t kKept = 8;
  constexpr int64_t kMaxKeptFloats = int64_t{1} << 19;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& t : recent)
      if (t->T == T && t->D == D && t->offset == offset && t->theta == theta && t->scaling == scaling && t->device == device) return t;
  }
  std::shared_ptr<const RopeTable> made = make_rope_table(T, D, theta, offset, scaling, device);  // outside the lock
  if (T * D <= kMaxKeptFloats) {
    std::lock_guard<std::mutex> lock(mu);
    recent.push_front(made);
    if (recent.size() > kKept) recent.pop_back();
  }
  return made;
}

// Rotates every head vector of x [B, T, H, D] by +angle (sign = 1) or −angle (sign = −1). In
// place when the caller gives x up (`may_overwrite`) and nothing else holds it: rotation needs
// no input once applied, so a copy would only add memory traffic.
Tensor rotate(const Tensor& x, const RopeTable& table, float sign, bool may_overwrite) {
  const OpTable& B = op_table(x.device(), OpKind::Rope, DType::F32);
  const bool in_place = may_overwrite && x.is_sole_reference() && x.is_contiguous();
  Tensor xc = contiguous_data(x);
  Tensor out = in_place ? x.detach() : Tensor::empty(x.shape(), DType::F32, x.device());
  if (in_place) out.bump_version();
  B.rope(xc, table.cos, table.sin, sign, out);
  return out;
}
}  // namespace

namespace {
Tensor rope_impl(const Tensor& x, float theta, int64_t position_offset, float scaling, bool may_overwrite) {
  check_f32(x, "rope", "x");
  SMELT_CHECK(x.dim() == 4, "rope: input must be [batch, seq, heads, head_dim], got ", x.str());
  SMELT_CHECK(x.size(3) % 2 == 0, "rope: head_dim must be even, got ", x.size(3));
  SMELT_CHECK(theta > 0 && scaling > 0, "rope: theta and scaling must be positive (", theta, ", ", scaling, ")");
  SMELT_CHECK(position_offset >= 0, "rope: position offset must be ≥ 0, got ", position_offset);
  const std::shared_ptr<const RopeTable> table = rope_table(x.size(1), x.size(3), theta, position_offset, scaling, x.device());
  // Rotating x in place keeps its history (the edge below points at x's grad_fn, not its data).
  Tensor out = rotate(x, *table, 1.0f, may_overwrite);
  if (needs_grad({&x})) {
    // The gradient reaching here is the engine's own: rotated in place when nothing else holds it.
    attach_grad_fn(out, "rope", {x}, [table](const Tensor& g) { return std::vector<Tensor>{rotate(g, *table, -1.0f, true)}; });
  }
  return out;
}
}  // namespace

Tensor rope(const Tensor& x, float theta, int64_t position_offset, float scaling) {
  return rope_impl(x, theta, position_offset, scaling, false);
}

Tensor rope(Tensor&& x, float theta, int64_t position_offset, float scaling) {
  return rope_impl(x, theta, position_offset, scaling, true);
}

namespace {
Tensor softmax_impl(const Tensor& x, bool log) {
  const char* name = log ? "log_softmax" : "softmax";
  check_f32(x, name, "x");
  SMELT_CHECK(x.dim() >= 1, name, ": needs rank ≥ 1");
  const OpTable& B = op_table(x.device(), OpKind::Softmax, DType::F32);
  Tensor xc = contiguous_data(x);
  Tensor out = Tensor::empty(x.shape(), DType::F32, x.device());
  B.softmax(xc, log, out, Tensor());
  if (!needs_grad({&x})) return out;
  SavedTensor Y(out.detach(), name);  // f32: routers' probabilities, whose small differences pick experts
  attach_grad_fn(out, name, {x}, [=](const Tensor& g) {
    Tensor gc = contiguous_data(g), ys = Y.get();
    Tensor dx = Tensor::empty(ys.shape(), DType::F32, ys.device());
    op_table(ys.device(), OpKind::SoftmaxBackward, DType::F32).softmax_backward(ys, gc, log, dx);
    return std::vector<Tensor>{dx};
  });
  return out;
}
}  // namespace

Tensor softmax(const Tensor& x) { return softmax_impl(x, false); }
Tensor log_softmax(const Tensor& x) { return softmax_impl(x, true); }

}  // namespace smelt::ops
