// Mixture-of-Experts feed-forward: dropless dispatch of token-slots to SwiGLU experts.
#pragma once
#include "ops/backend.h"
#include "runtime/tensor.h"

namespace smelt::ops {

// out[n] = Σ_{s : token[s] = n} weight[s] · down_e(silu(gate_e · x[n]) ⊙ (up_e · x[n])), e = expert[s].
//   x [N, C]; gate, up [E, F, C]; down [E, C, F]; token, expert [S] integers; weight [S] f32.
// A slot whose expert is −1 is dropped (capacity): it runs nowhere and its weight gets a zero
// gradient, so the routing can keep a fixed number of slots on the device.
// Slots are sorted by expert and each expert runs as one GEMM over its contiguous segment
// (MegaBlocks' dropless idea); a token may appear in any number of slots (top-k routing), or
// in none (dropped). Differentiable in x, the expert weights and the routing weights.
Tensor moe_ffn(const Tensor& x, const Tensor& gate, const Tensor& up, const Tensor& down, const Tensor& token,
               const Tensor& expert, const Tensor& weight);

// Wall time spent in moe_ffn's forward phases since the last reset, when timing is on: routing
// bookkeeping (sort, gather, weighted scatter) versus the expert SwiGLU itself. For smelt bench.
struct MoeTimings {
  double dispatch_seconds = 0;  // the slots' counting sort by expert
  double expert_seconds = 0;    // per-expert GEMMs, the SwiGLU and the combine (one backend call)
  double backward_dispatch_seconds = 0;  // unused since the backward is one backend call (kept 0)
  double backward_expert_seconds = 0;    // the whole backward: routing-weight gradients, GEMMs, SwiGLU derivative, combine
  int64_t calls = 0;
};
void set_moe_timing(bool on);
MoeTimings take_moe_timings();  // returns and resets

// Routes router scores [N, E] to a fixed number of slots on their device (ops/backend.h's
// MoeRoute: slot token, expert (−1 unused or dropped), flat score index, chosen mask, and the
// routing statistics). bias [E] is the aux-free selection bias (updated in place when
// params.bias_rate > 0); mask [N] marks real tokens (undefined: all). Not differentiable.
MoeRoute moe_route(const Tensor& scores, const Tensor& bias, const Tensor& mask, const MoeRouteParams& params);

// Indices of the k largest entries of each row of x [N, E] (ties: lower index first) → [N, k] i64.
// Not differentiable: gather the chosen values with ops::gather to route gradients.
Tensor topk_indices(const Tensor& x, int64_t k);

}  // namespace smelt::ops
