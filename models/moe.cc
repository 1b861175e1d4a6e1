#include "models/moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

#include "autograd/grad_mode.h"
#include "ops/moe.h"
#include "ops/ops.h"

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
      routed_scaling_(c.routed_scaling_factor),
      aux_coef_(c.router_aux_loss_coef),
      z_coef_(c.router_z_loss_coef),
      capacity_factor_(c.capacity_factor),
      jitter_(c.router_jitter_noise),
      bias_rate_(c.aux_free_update_rate),
      balancing_(c.moe_balancing),
      jitter_rng_(0x6a177e5ULL + static_cast<uint64_t>(layer)) {}

namespace {

// The routing decision for one forward, made on host values (not differentiable): which
// (token, expert) slots exist before capacity, and which of them are kept.
struct Routing {
  std::vector<int64_t> token, expert;  // all chosen slots
  std::vector<int64_t> kept;           // indices into the slots that survive capacity
  std::vector<int64_t> chosen_per_expert;  // slots from real tokens, before dropping (for the aux loss)
};

}  // namespace

Tensor MoEBlock::forward(const Tensor& x, const Tensor& token_mask, const RoutingPolicy& policy) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), N = B * T, E = experts_;
  const bool training = grad_enabled();
  Tensor xf = ops::reshape(x, {N, C});

  // ---- router scores
  Tensor router_in = xf;
  if (training && jitter_ > 0) {
    Tensor noise = Tensor::uniform({N, C}, jitter_rng_, static_cast<float>(1.0 - jitter_), static_cast<float>(1.0 + jitter_));
    router_in = ops::mul(xf, noise);
  }
  Tensor logits = ops::linear(router_in, router);  // [N, E]
  Tensor scores = softmax_scores_ ? ops::softmax(logits) : ops::sigmoid(logits);
  const std::vector<float> sv = scores.to_vector();
  std::vector<float> mask(N, 1.0f);
  if (token_mask.defined()) {
    SMELT_CHECK(token_mask.numel() == N, "MoE token mask has ", token_mask.numel(), " entries for ", N, " tokens");
    mask = token_mask.to_vector();
  }
  double real = 0;
  for (float m : mask) real += m > 0 ? 1 : 0;
  const double real_tokens = std::max(real, 1.0);
  // Routing probabilities: softmax scores, or sigmoid scores normalised per token.
  std::vector<double> prob(N * E);
  for (int64_t n = 0; n < N; ++n) {
    double total = 0;
    for (int64_t e = 0; e < E; ++e) total += sv[n * E + e];
    for (int64_t e = 0; e < E; ++e) prob[n * E + e] = softmax_scores_ ? sv[n * E + e] : sv[n * E + e] / std::max(total, 1e-30);
  }
  const std::vector<float> bias = score_bias.to_vector();

  // ---- choose slots
  Routing r;
  r.chosen_per_expert.assign(E, 0);
  if (expert_choice_) {
    // Each expert takes its top-capacity tokens by score.
    const double cf = capacity_factor_ > 0 ? capacity_factor_ : 1.0;
    const int64_t cap = std::min<int64_t>(N, static_cast<int64_t>(std::ceil(cf * N * top_k_ / static_cast<double>(E))));
    std::vector<int64_t> order(N);
    for (int64_t e = 0; e < E; ++e) {
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + cap, order.end(), [&](int64_t a, int64_t b) {
        return sv[a * E + e] > sv[b * E + e] || (sv[a * E + e] == sv[b * E + e] && a < b);
      });
      for (int64_t i = 0; i < cap; ++i) {
        r.token.push_back(order[i]);
        r.expert.push_back(e);
        if (mask[order[i]] > 0) ++r.chosen_per_expert[e];
      }
    }
    r.kept.resize(r.token.size());
    std::iota(r.kept.begin(), r.kept.end(), 0);
  } else {
    // Token choice: per token, experts by selection score (score + balancing bias).
    std::vector<int64_t> order(E);
    std::vector<std::vector<int64_t>> chosen(N);
    int64_t max_k = 0;
    for (int64_t n = 0; n < N; ++n) {
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        const float sa = sv[n * E + a] + bias[a], sb = sv[n * E + b] + bias[b];
        return sa > sb || (sa == sb && a < b);
      });
      int64_t count = std::min(policy.kind == RoutingPolicy::Kind::TopK ? policy.k : E, E);
      if (policy.kind == RoutingPolicy::Kind::TopP) {
        double cum = 0;
        const int64_t cap = policy.max_experts > 0 ? std::min(policy.max_experts, E) : E;
        count = cap;
        for (int64_t i = 0; i < cap; ++i) {
          cum += prob[n * E + order[i]];
          if (cum >= policy.p) {
            count = i + 1;
            break;
          }
        }
      }
      chosen[n].assign(order.begin(), order.begin() + std::max<int64_t>(count, 1));
      max_k = std::max<int64_t>(max_k, static_cast<int64_t>(chosen[n].size()));
    }
    // Slots in priority order (every token's first choice, then second choices, ...), so that
    // capacity drops later choices first (GShard).
    for (int64_t j = 0; j < max_k; ++j)
      for (int64_t n = 0; n < N; ++n)
        if (j < static_cast<int64_t>(chosen[n].size())) {
          r.token.push_back(n);
          r.expert.push_back(chosen[n][j]);
          if (mask[n] > 0) ++r.chosen_per_expert[chosen[n][j]];
        }
    std::vector<int64_t> fill(E, 0);
    const int64_t cap = capacity_factor_ > 0
                            ? static_cast<int64_t>(std::ceil(capacity_factor_ * real_tokens * top_k_ / static_cast<double>(E)))
                            : std::numeric_limits<int64_t>::max();
    for (size_t s = 0; s < r.token.size(); ++s)
      if (fill[r.expert[s]] < cap) {
        ++fill[r.expert[s]];
        r.kept.push_back(static_cast<int64_t>(s));
      }
  }

  // ---- differentiable routing weights for the slots
  const int64_t S = static_cast<int64_t>(r.token.size());
  std::vector<int64_t> flat(S);
  for (int64_t s = 0; s < S; ++s) flat[s] = r.token[s] * E + r.expert[s];
  Tensor tok_all = Tensor::from_ints(r.token, {S});
  Tensor weights = ops::index_select(ops::reshape(scores, {N * E}), 0, Tensor::from_ints(flat, {S}));
  if (norm_topk_prob_ && !expert_choice_) {
    Tensor den = ops::scatter_add(Tensor::zeros({N}), 0, tok_all, weights);
    weights = ops::div(weights, ops::index_select(den, 0, tok_all));
  }
  if (routed_scaling_ != 1.0) weights = ops::mul(weights, static_cast<float>(routed_scaling_));
  std::vector<int64_t> kept_tok, kept_exp;
  for (int64_t s : r.kept) {
    kept_tok.push_back(r.token[s]);
    kept_exp.push_back(r.expert[s]);
  }
  const int64_t K = static_cast<int64_t>(r.kept.size());
  if (K != S) weights = ops::index_select(weights, 0, Tensor::from_ints(r.kept, {K}));
  Tensor out = ops::moe_ffn(xf, gate_proj, up_proj, down_proj, Tensor::from_ints(kept_tok, {K}), Tensor::from_ints(kept_exp, {K}), weights);

  if (shared_gate_proj.defined()) {
    Tensor shared = ops::linear(ops::swiglu(ops::linear(xf, shared_gate_proj), ops::linear(xf, shared_up_proj)), shared_down_proj);
    if (shared_expert_gate.defined()) shared = ops::mul(shared, ops::sigmoid(ops::linear(xf, shared_expert_gate)));
    out = ops::add(out, shared);
  }

  // ---- statistics
  stats_ = MoEStats();
  stats_.load.assign(E, 0.0);
  double kept_real = 0;
  for (int64_t s : r.kept)
    if (mask[r.token[s]] > 0) {
      stats_.load[r.expert[s]] += 1;
      kept_real += 1;
    }
  double chosen_real = 0;
  for (int64_t c : r.chosen_per_expert) chosen_real += c;
  for (double& l : stats_.load) l = kept_real > 0 ? l / kept_real : 0.0;
  const double mean_load = 1.0 / static_cast<double>(E);
  double var = 0;
  for (double l : stats_.load) var += (l - mean_load) * (l - mean_load);
  stats_.load_cv = std::sqrt(var / static_cast<double>(E)) / mean_load;
  stats_.dropped_fraction = chosen_real > 0 ? 1.0 - kept_real / chosen_real : 0.0;
  stats_.mean_active_experts = kept_real / real_tokens;
  double entropy = 0;
  for (int64_t n = 0; n < N; ++n) {
    if (mask[n] <= 0) continue;
    for (int64_t e = 0; e < E; ++e) {
      const double p = prob[n * E + e];
      if (p > 0) entropy -= p * std::log(p);
    }
  }
  stats_.router_entropy = entropy / real_tokens;

  // ---- balancing
  aux_loss_ = Tensor();
  std::vector<float> real_mask(N);
  for (int64_t n = 0; n < N; ++n) real_mask[n] = mask[n] > 0 ? 1.0f : 0.0f;
  Tensor mask_t = Tensor::from_vector(real_mask, {N});
  {
    // Switch/GShard: E · Σ_e f_e · P_e over real tokens; f_e (fraction of chosen slots) is a
    // constant, P_e (mean routing probability) carries the gradient.
    std::vector<float> f(E);
    for (int64_t e = 0; e < E; ++e) f[e] = chosen_real > 0 ? static_cast<float>(r.chosen_per_expert[e] / chosen_real) : 0.0f;
    Tensor probs_t = softmax_scores_ ? scores : ops::div(scores, ops::sum(scores, {-1}, true));
    Tensor P = ops::mul(ops::matmul(ops::reshape(mask_t, {1, N}), probs_t), 1.0f / static_cast<float>(real_tokens));  // [1, E]
    Tensor aux = ops::mul(ops::sum(ops::mul(P, Tensor::from_vector(f, {E}))), static_cast<float>(E));
    stats_.aux_loss = aux.item();
    if (balancing_ == "aux_loss" && aux_coef_ > 0) aux_loss_ = ops::mul(aux, static_cast<float>(aux_coef_));
  }
  {
    // ST-MoE z-loss: mean over real tokens of logsumexp(logits)².
    Tensor m;
    {
      NoGradGuard g;
      m = ops::max(logits, -1, true);
    }
    Tensor lse = ops::add(ops::log(ops::sum(ops::exp(ops::sub(logits, m)), {-1}, true)), m);  // [N, 1]
    Tensor z = ops::mul(ops::sum(ops::mul(ops::reshape(mask_t, {N, 1}), ops::mul(lse, lse))), 1.0f / static_cast<float>(real_tokens));
    stats_.z_loss = z.item();
    if (z_coef_ > 0) {
      Tensor zl = ops::mul(z, static_cast<float>(z_coef_));
      aux_loss_ = aux_loss_.defined() ? ops::add(aux_loss_, zl) : zl;
    }
  }
  if (training && balancing_ == "aux_free" && !expert_choice_) {
    // DeepSeek-V3: nudge each expert's selection bias toward the mean load (no gradient involved).
    float* b = score_bias.data<float>();
    for (int64_t e = 0; e < E; ++e) {
      const double load = chosen_real > 0 ? r.chosen_per_expert[e] / chosen_real : mean_load;
      b[e] += static_cast<float>(bias_rate_ * (load < mean_load ? 1.0 : (load > mean_load ? -1.0 : 0.0)));
    }
    score_bias.bump_version();
  }
  return ops::reshape(out, {B, T, C});
}

}  // namespace smelt
