// The MoE dispatch: checks, then the device's permute (slots sorted by expert, each token's slots
// listed) and experts (one grouped GEMM per phase over the segments, combined per token), with
// the backward beside it (ops/cpu/moe_ops.cc has the CPU's).
#include "ops/moe.h"

#include <algorithm>
#include <cmath>

#include <chrono>

#include "ops/common.h"

namespace smelt::ops {
namespace {

bool g_timing = false;
MoeTimings g_timings;

// Adds the time since construction (or the last lap) to a phase when timing is on.
class PhaseClock {
 public:
  PhaseClock() : last_(std::chrono::steady_clock::now()) {}
  void lap(double& phase) {
    if (!g_timing) return;
    auto now = std::chrono::steady_clock::now();
    phase += std::chrono::duration<double>(now - last_).count();
    last_ = now;
  }

 private:
  std::chrono::steady_clock::time_point last_;
};

}  // namespace

void set_moe_timing(bool on) { g_timing = on; }

MoeTimings take_moe_timings() {
  MoeTimings t = g_timings;
  g_timings = MoeTimings();
  return t;
}

MoeRoute moe_route(const Tensor& scores, const Tensor& bias, const Tensor& mask, const MoeRouteParams& p) {
  check_f32(scores, "moe_route", "scores");
  check_f32(bias, "moe_route", "bias");
  SMELT_CHECK(scores.dim() == 2, "moe_route: scores must be [tokens, experts], got ", scores.str());
  const int64_t N = scores.size(0), E = scores.size(1);
  SMELT_CHECK(bias.numel() == E, "moe_route: bias ", bias.str(), " for ", E, " experts");
  check_same_device(scores, bias, "moe_route");
  if (mask.defined()) {
    check_f32(mask, "moe_route", "mask");
    check_same_device(scores, mask, "moe_route");
    SMELT_CHECK(mask.numel() == N, "MoE token mask has ", mask.numel(), " entries for ", N, " tokens");
  }
  SMELT_CHECK(p.k >= 1 && p.config_top_k >= 1, "moe_route: k must be ≥ 1");
  // Slots per token (token choice) or per expert (expert choice): fixed before routing, so the
  // device never reports a count back.
  int64_t S;
  if (p.expert_choice) {
    const double cf = p.capacity_factor > 0 ? p.capacity_factor : 1.0;
    S = E * std::min<int64_t>(N, static_cast<int64_t>(std::ceil(cf * N * p.config_top_k / static_cast<double>(E))));
  } else {
    S = N * std::min(p.k, E);
  }
  const Device dev = scores.device();
  const OpTable& B = op_table(dev, OpKind::MoeRoute, DType::F32);
  MoeRoute r{Tensor::empty({S}, DType::I64, dev), Tensor::empty({S}, DType::I64, dev), Tensor::empty({S}, DType::I64, dev),
             Tensor::empty({S}, DType::F32, dev), Tensor::empty({2 * E + 4}, DType::F32, dev)};
  B.moe_route(contiguous_data(scores), bias, mask.defined() ? contiguous_data(mask) : Tensor(), p, r);
  if (p.bias_rate > 0) bias.bump_version();
  return r;
}

Tensor topk_indices(const Tensor& x, int64_t k) {
  check_f32(x, "topk_indices", "x");
  SMELT_CHECK(x.dim() == 2, "topk_indices: x must be [rows, E], got ", x.str());
  const int64_t N = x.size(0), E = x.size(1);
  SMELT_CHECK(k >= 1 && k <= E, "topk_indices: k = ", k, " must be in [1, ", E, "]");
  const OpTable& B = op_table(x.device(), OpKind::TopK, DType::F32);
  Tensor out = Tensor::empty({N, k}, DType::I64, x.device());
  B.topk(contiguous_data(x), k, out);
  return out;
}

Tensor moe_ffn(const Tensor& x, const Tensor& gate, const Tensor& up, const Tensor& down, const Tensor& token,
               const Tensor& expert, const Tensor& weight) {
  check_f32(x, "moe_ffn", "x");
  check_weight(gate, "moe_ffn", "gate");
  check_weight(up, "moe_ffn", "up");
  check_weight(down, "moe_ffn", "down");
  check_f32(weight, "moe_ffn", "weight");
  check_index(token, "moe_ffn", "token");
  check_index(expert, "moe_ffn", "expert");
  for (const Tensor* t : {&gate, &up, &down, &token, &expert, &weight}) check_same_device(x, *t, "moe_ffn");
  SMELT_CHECK(x.dim() == 2, "moe_ffn: x must be [tokens, hidden], got ", x.str());
  SMELT_CHECK(gate.dim() == 3 && up.shape() == gate.shape(), "moe_ffn: gate ", gate.str(), " and up ", up.str(),
              " must both be [experts, ffn, hidden]");
  const int64_t E = gate.size(0), F = gate.size(1), C = gate.size(2), N = x.size(0), S = token.numel();
  SMELT_CHECK(C == x.size(1), "moe_ffn: expert hidden size ", C, " does not match x ", x.str());
  SMELT_CHECK(down.shape() == Shape({E, C, F}), "moe_ffn: down ", down.str(), " must be [", E, ", ", C, ", ", F, "]");
  SMELT_CHECK(token.numel() == expert.numel() && token.numel() == weight.numel(), "moe_ffn: token ", token.str(), ", expert ",
              expert.str(), " and weight ", weight.str(), " must have one entry per slot");
  const Device dev = x.device();
  const OpTable& B = op_table(dev, OpKind::MoeExperts, gate.dtype());
  PhaseClock clock;
  MoeDispatch d{Tensor::empty({S}, DType::I64, dev), Tensor::empty({E + 1}, DType::I64, dev), Tensor::empty({S}, DType::I64, dev),
                Tensor::empty({N + 1}, DType::I64, dev), Tensor::empty({S}, DType::I64, dev)};
  op_table(dev, OpKind::MoePermute, DType::F32).moe_permute(contiguous_data(token), contiguous_data(expert), d);
  Tensor xc = contiguous_data(x), gc = contiguous_data(gate), uc = contiguous_data(up), dc = contiguous_data(down);
  Tensor wc = contiguous_data(weight);
  // The activations kept for backward, in sorted-slot order. Token rows are not gathered into a
  // copy: the GEMMs read x through the sorted token index.
  Tensor h = Tensor::empty({S, F}, DType::F32, dev), u = Tensor::empty({S, F}, DType::F32, dev), act = Tensor::empty({S, F}, DType::F32, dev);
  Tensor ys = Tensor::empty({S, C}, DType::F32, dev);
  Tensor out = Tensor::empty({N, C}, DType::F32, dev);
  clock.lap(g_timings.dispatch_seconds);
  B.moe_experts(xc, gc, uc, dc, wc, d, h, u, act, ys, out);
  clock.lap(g_timings.expert_seconds);
  if (g_timing) ++g_timings.calls;
  if (!needs_grad({&x, &gate, &up, &down, &weight})) return out;
  // Weight gradients only where asked for: bf16 experts (inference) pass gradients to x without one.
  const bool need_gate = gate.requires_grad(), need_up = up.requires_grad(), need_down = down.requires_grad();
  SavedTensor X(xc, "moe_ffn", is_activation(x)), G(gc, "moe_ffn"), U(uc, "moe_ffn"), D(dc, "moe_ffn"), W(wc, "moe_ffn");
  // The experts' own activations: bf16 copies under mixed precision on a device, like the others.
  SavedTensor Hs(h, "moe_ffn", true), Us(u, "moe_ffn", true), As(act, "moe_ffn", true), Ys(ys, "moe_ffn", true);
  attach_grad_fn(out, "moe_ffn", {x, gate, up, down, weight}, [=](const Tensor& grad) {
    PhaseClock clock;
    Tensor gr = contiguous_data(grad), xv = X.get(), gv = G.get(), uv = U.get(), dv = D.get(), wv = W.get();
    const Tensor h = Hs.get(), u = Us.get(), act = As.get(), ys = Ys.get();
    Tensor dgate = need_gate ? Tensor::empty({E, F, C}, DType::F32, dev) : Tensor(), dup = need_up ? Tensor::empty({E, F, C}, DType::F32, dev) : Tensor();
    Tensor ddown = need_down ? Tensor::empty({E, C, F}, DType::F32, dev) : Tensor();
    Tensor dx = Tensor::empty({N, C}, DType::F32, dev), dweight = Tensor::empty({S}, DType::F32, dev);
    op_table(dev, OpKind::MoeExpertsBackward, gv.dtype()).moe_experts_backward(xv, gv, uv, dv, wv, d, h, u, act, ys, gr, dx, dgate, dup, ddown, dweight);
    clock.lap(g_timings.backward_expert_seconds);
    return std::vector<Tensor>{dx, dgate, dup, ddown, dweight};
  });
  return out;
}

}  // namespace smelt::ops
