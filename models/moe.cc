#include "models/moe.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "autograd/grad_mode.h"
#include "ops/moe.h"
#include "ops/ops.h"
#include "ops/random.h"

namespace smelt {

RoutingPolicy RoutingPolicy::top_k(int64_t k) {
  RoutingPolicy p;
  p.kind = Kind::TopK;
  p.k = k;
  return p;
}

RoutingPolicy RoutingPolicy::top_p(double threshold, int64_t max_experts) {
  RoutingPolicy p;
  p.kind = Kind::TopP;
  p.p = threshold;
  p.max_experts = max_experts;
  return p;
}

std::string RoutingPolicy::str() const {
  std::ostringstream os;
  if (kind == Kind::TopK) os << "top-" << k;
  else os << "top-p " << p << (max_experts > 0 ? " (at most " + std::to_string(max_experts) + ")" : "");
  return os.str();
}

RoutingPolicy RoutingPolicy::parse(const std::string& spec) {
  std::vector<std::string> fields;
  size_t start = 0;
  for (size_t i = 0; i <= spec.size(); ++i)
    if (i == spec.size() || spec[i] == ':') {
      fields.push_back(spec.substr(start, i - start));
      start = i + 1;
    }
  try {
    if (fields[0] == "top-k" && fields.size() == 2) return top_k(std::stoll(fields[1]));
    if (fields[0] == "top-p" && (fields.size() == 2 || fields.size() == 3)) return top_p(std::stod(fields[1]), fields.size() == 3 ? std::stoll(fields[2]) : 0);
  } catch (const std::exception&) {
  }
  SMELT_FAIL("routing policy '", spec, "': expected top-k:K, top-p:P or top-p:P:MAX");
}

std::string RoutingPolicy::spec() const {
  if (kind == Kind::TopK) return "top-k:" + std::to_string(k);
  std::ostringstream os;
  os << "top-p:" << p;
  if (max_experts > 0) os << ":" << max_experts;
  return os.str();
}

MoEBlock::MoEBlock(const ModelConfig& c, int64_t layer)
    : experts_(c.num_local_experts),
      top_k_(c.num_experts_per_tok),
      softmax_scores_(c.scoring_func == "softmax"),
      norm_topk_prob_(c.norm_topk_prob),
      expert_choice_(c.routing == "expert_choice"),
      unit_weights_(c.routed_weights == "unit"),
      routed_scaling_(c.routed_scaling_factor),
      aux_coef_(c.router_aux_loss_coef),
      z_coef_(c.router_z_loss_coef),
      capacity_factor_(c.capacity_factor),
      jitter_(c.router_jitter_noise),
      bias_rate_(c.aux_free_update_rate),
      balancing_(c.moe_balancing),
      jitter_rng_(0x6a177e5ULL + static_cast<uint64_t>(layer)) {}

MoEStats MoEStats::from_raw(const std::vector<float>& raw, int64_t E) {
  // raw: the route's statistics [2E + 4] (ops/backend.h's MoeRoute), then aux and z losses.
  SMELT_ASSERT(static_cast<int64_t>(raw.size()) == kRawExtra + 2 * E);
  MoEStats st;
  const double kept_real = raw[2 * E], chosen_real = raw[2 * E + 1], real_tokens = std::max<double>(raw[2 * E + 3], 1.0);
  st.load.assign(E, 0.0);
  for (int64_t e = 0; e < E; ++e) st.load[e] = kept_real > 0 ? raw[e] / kept_real : 0.0;
  const double mean_load = 1.0 / static_cast<double>(E);
  double var = 0;
  for (double l : st.load) var += (l - mean_load) * (l - mean_load);
  st.load_cv = std::sqrt(var / static_cast<double>(E)) / mean_load;
  st.dropped_fraction = chosen_real > 0 ? 1.0 - kept_real / chosen_real : 0.0;
  st.mean_active_experts = kept_real / real_tokens;
  st.router_entropy = raw[2 * E + 2] / real_tokens;
  st.aux_loss = raw[2 * E + 4];
  st.z_loss = raw[2 * E + 5];
  return st;
}

const MoEStats& MoEBlock::stats() const {
  if (!stats_ && raw_stats_.defined()) stats_ = MoEStats::from_raw(raw_stats_.to_vector(), experts_);  // one host read
  if (!stats_) stats_ = MoEStats();
  return *stats_;
}

void MoEBlock::set_stats_from_raw(const std::vector<float>& raw) const { stats_ = MoEStats::from_raw(raw, experts_); }

// ---- the forward's steps

Tensor MoEBlock::router_logits(const Tensor& xf) {
  Tensor router_in = xf;
  if (grad_enabled() && jitter_ > 0) {
    const Tensor noise = ops::uniform(xf.shape(), jitter_rng_, static_cast<float>(1.0 - jitter_), static_cast<float>(1.0 + jitter_), xf.device());
    router_in = ops::mul(xf, noise);
  }
  return ops::linear(router_in, router);  // [N, E]
}

// 1 for the tokens that count (real), 0 for padding, on x's device.
Tensor real_token_mask(const Tensor& token_mask, int64_t N, Device device) {
  if (!token_mask.defined()) return Tensor::ones({N}, device);
  SMELT_CHECK(token_mask.numel() == N, "MoE token mask has ", token_mask.numel(), " entries for ", N, " tokens");
  return ops::positive(ops::reshape(token_mask.to(DType::F32).to(device), {N}));
}

MoeRoute MoEBlock::route(const Tensor& scores, const Tensor& mask, const RoutingPolicy& policy) {
  MoeRouteParams p;
  p.expert_choice = expert_choice_;
  p.softmax_scores = softmax_scores_;
  p.top_p = policy.kind == RoutingPolicy::Kind::TopP;
  p.k = p.top_p ? (policy.max_experts > 0 ? std::min(policy.max_experts, experts_) : experts_) : policy.k;
  p.p = policy.p;
  p.config_top_k = top_k_;
  p.capacity_factor = capacity_factor_;
  p.bias_rate = grad_enabled() && balancing_ == "aux_free" ? bias_rate_ : 0.0;
  return ops::moe_route(scores, score_bias, mask, p);
}

// The differentiable weight of every slot: its score, renormalised over the token's chosen
// slots (norm_topk_prob), scaled; zero for unused slots.
Tensor MoEBlock::slot_weights(const Tensor& scores, const MoeRoute& r) const {
  if (unit_weights_) return r.chosen;  // selection only: 1 for every chosen slot, 0 for unused ones
  const int64_t N = scores.size(0);
  Tensor weights = ops::mul(ops::index_select(ops::reshape(scores, {-1}), 0, r.flat), r.chosen);
  if (norm_topk_prob_ && !expert_choice_) {
    const Tensor den = ops::scatter_add(Tensor::zeros({N}, DType::F32, scores.device()), 0, r.token, weights);
    weights = ops::div(weights, ops::index_select(den, 0, r.token));
  }
  if (routed_scaling_ != 1.0) weights = ops::mul(weights, static_cast<float>(routed_scaling_));
  return weights;
}

Tensor MoEBlock::add_shared_expert(const Tensor& xf, const Tensor& routed) const {
  if (!shared_gate_proj.defined()) return routed;
  Tensor shared = ops::linear(ops::swiglu(ops::linear(xf, shared_gate_proj), ops::linear(xf, shared_up_proj)), shared_down_proj);
  if (shared_expert_gate.defined()) shared = ops::mul(shared, ops::sigmoid(ops::linear(xf, shared_expert_gate)));
  return ops::add(routed, shared);
}

// The balancing losses over real tokens, kept as tensors: Switch/GShard's E · Σ_e f_e · P_e
// (f_e, the fraction of chosen slots, a constant; P_e, the mean routing probability, carries
// the gradient) and ST-MoE's z-loss, mean of logsumexp(logits)². Returns [aux, z].
Tensor MoEBlock::balancing_losses(const Tensor& logits, const Tensor& scores, const Tensor& mask, const MoeRoute& r) {
  const int64_t N = scores.size(0), E = experts_;
  const Tensor real_tokens = ops::clamp_min(ops::sum(mask), 1.0f);
  const Tensor chosen_real = ops::clamp_min(ops::slice(r.stats, 0, 2 * E + 1, 2 * E + 2), 1.0f);
  const Tensor f = ops::div(ops::slice(r.stats, 0, E, 2 * E), chosen_real);
  const Tensor probs = softmax_scores_ ? scores : ops::div(scores, ops::sum(scores, {-1}, true));
  const Tensor P = ops::div(ops::matmul(ops::reshape(mask, {1, N}), probs), real_tokens);  // [1, E]
  const Tensor aux = ops::mul(ops::sum(ops::mul(P, f)), static_cast<float>(E));
  Tensor m;
  {
    NoGradGuard g;
    m = ops::max(logits, -1, true);
  }
  const Tensor lse = ops::add(ops::log(ops::sum(ops::exp(ops::sub(logits, m)), {-1}, true)), m);  // [N, 1]
  const Tensor z = ops::div(ops::sum(ops::mul(ops::reshape(mask, {N, 1}), ops::mul(lse, lse))), real_tokens);
  aux_loss_ = Tensor();
  if (balancing_ == "aux_loss" && aux_coef_ > 0) aux_loss_ = ops::mul(aux, static_cast<float>(aux_coef_));
  if (z_coef_ > 0) {
    const Tensor zl = ops::mul(z, static_cast<float>(z_coef_));
    aux_loss_ = aux_loss_.defined() ? ops::add(aux_loss_, zl) : zl;
  }
  NoGradGuard g;
  return ops::cat({ops::reshape(aux.detach(), {1}), ops::reshape(z.detach(), {1})}, 0);
}

Tensor MoEBlock::forward(const Tensor& x, const Tensor& token_mask, const RoutingPolicy& policy) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), N = B * T;
  const Tensor xf = ops::reshape(x, {N, C});
  const Tensor logits = router_logits(xf);
  const Tensor scores = softmax_scores_ ? ops::softmax(logits) : ops::sigmoid(logits);
  const Tensor mask = real_token_mask(token_mask, N, x.device());
  const MoeRoute r = route(scores, mask, policy);
  const Tensor routed = shard_.comm ? expert_parallel_ffn(xf, r, slot_weights(scores, r))
                                    : ops::moe_ffn(xf, gate_proj, up_proj, down_proj, r.token, r.expert, slot_weights(scores, r));
  const Tensor out = add_shared_expert(xf, routed);
  const Tensor losses = balancing_losses(logits, scores, mask, r);
  // The statistics stay on the device until someone reads them (stats(), or the trainer's
  // one read per step through Transformer::moe_raw_stats).
  raw_stats_ = ops::cat({r.stats, losses}, 0);
  stats_.reset();
  return ops::reshape(out, {B, T, C});
}

}  // namespace smelt
