#include "optim/moefy_fit.h"

#include "runtime/log.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "autograd/grad_mode.h"
#include "ops/distill.h"
#include "ops/ops.h"
#include "optim/optimizer.h"
#include "runtime/rng.h"

namespace smelt {

void LayerFitOptions::validate() const {
  SMELT_CHECK(steps >= 0 && batch_tokens > 0, "layer fit: steps must be ≥ 0 and batch tokens positive");
  SMELT_CHECK(lr > 0 && lr <= 1, "layer fit: --fit-lr must be in (0, 1], got ", lr);
  SMELT_CHECK(holdout > 0 && holdout < 1, "layer fit: holdout must be in (0, 1), got ", holdout);
  SMELT_CHECK(min_k >= 0, "--fit-min-k must be ≥ 0, got ", min_k);
}

namespace {

// Solves (A + λI) x = b for symmetric positive definite A [n × n] by Cholesky, in place.
std::vector<double> solve_spd(std::vector<double> a, std::vector<double> b, int64_t n, double lambda) {
  for (int64_t i = 0; i < n; ++i) a[i * n + i] += lambda;
  for (int64_t j = 0; j < n; ++j) {
    double d = a[j * n + j];
    for (int64_t k = 0; k < j; ++k) d -= a[j * n + k] * a[j * n + k];
    SMELT_CHECK(d > 0, "router fit: the calibration inputs are degenerate (matrix not positive definite)");
    const double l = std::sqrt(d);
    a[j * n + j] = l;
    for (int64_t i = j + 1; i < n; ++i) {
      double s = a[i * n + j];
      for (int64_t k = 0; k < j; ++k) s -= a[i * n + k] * a[j * n + k];
      a[i * n + j] = s / l;
    }
  }
  for (int64_t i = 0; i < n; ++i) {  // L y = b
    double s = b[i];
    for (int64_t k = 0; k < i; ++k) s -= a[i * n + k] * b[k];
    b[i] = s / a[i * n + i];
  }
  for (int64_t i = n - 1; i >= 0; --i) {  // Lᵀ x = y
    double s = b[i];
    for (int64_t k = i + 1; k < n; ++k) s -= a[k * n + i] * b[k];
    b[i] = s / a[i * n + i];
  }
  return b;
}

// Rows [begin, end) of x [N, C].
Tensor rows(const Tensor& x, const std::vector<int64_t>& idx) {
  return ops::index_select(x, 0, Tensor::from_ints(idx, {static_cast<int64_t>(idx.size())}, DType::I64, x.device()));
}

}  // namespace

double relative_error(MoEBlock& block, const Tensor& x, const Tensor& t, const RoutingPolicy& policy) {
  NoGradGuard no_grad;
  const Tensor y = ops::reshape(block.forward(ops::unsqueeze(x, 0), Tensor(), policy), {x.size(0), x.size(1)});
  return ops::hidden_state_loss(y, t, ops::HiddenLoss::MSE).item();
}

void fit_router_to_expert_norms(MoEBlock& block, const Tensor& inputs) {
  NoGradGuard no_grad;
  const int64_t N = inputs.size(0), C = inputs.size(1), E = block.num_experts();
  // Each expert's output norm per token: ‖down_e · swiglu(gate_e x, up_e x)‖.
  std::vector<double> y(static_cast<size_t>(N * E));
  for (int64_t e = 0; e < E; ++e) {
    auto expert = [&](const Tensor& w) { return ops::reshape(ops::slice(w, 0, e, e + 1), {w.size(1), w.size(2)}); };
    const Tensor h = ops::swiglu(ops::linear(inputs, expert(block.gate_proj)), ops::linear(inputs, expert(block.up_proj)));
    const std::vector<float> out = ops::linear(h, expert(block.down_proj)).to_vector();
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t c = 0; c < C; ++c) s += static_cast<double>(out[n * C + c]) * out[n * C + c];
      y[n * E + e] = std::sqrt(s);
    }
  }
  for (int64_t n = 0; n < N; ++n) {  // softmax sees only differences between experts
    double m = 0;
    for (int64_t e = 0; e < E; ++e) m += y[n * E + e] / static_cast<double>(E);
    for (int64_t e = 0; e < E; ++e) y[n * E + e] -= m;
  }
  const std::vector<float> x = inputs.to_vector();
  std::vector<double> xtx(static_cast<size_t>(C * C), 0.0), xty(static_cast<size_t>(C * E), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < C; ++i) {
      const double xi = x[n * C + i];
      for (int64_t j = 0; j <= i; ++j) xtx[i * C + j] += xi * x[n * C + j];
      for (int64_t e = 0; e < E; ++e) xty[i * E + e] += xi * y[n * E + e];
    }
  double trace = 0;
  for (int64_t i = 0; i < C; ++i) {
    for (int64_t j = 0; j < i; ++j) xtx[j * C + i] = xtx[i * C + j];
    trace += xtx[i * C + i];
  }
  const double lambda = 1e-3 * trace / static_cast<double>(C) + 1e-12;
  std::vector<float> router(static_cast<size_t>(E * C));
  for (int64_t e = 0; e < E; ++e) {
    std::vector<double> b(C);
    for (int64_t i = 0; i < C; ++i) b[i] = xty[i * E + e];
    const std::vector<double> r = solve_spd(xtx, b, C, lambda);
    for (int64_t i = 0; i < C; ++i) router[e * C + i] = static_cast<float>(r[i]);
  }
  // Shrink so the logits' spread over the calibration tokens is ~0.1.
  const Tensor r = Tensor::from_vector(router, {E, C}, inputs.device());
  const std::vector<float> logits = ops::linear(inputs, r).to_vector();
  double mean = 0, var = 0;
  for (float v : logits) mean += v / static_cast<double>(logits.size());
  for (float v : logits) var += (v - mean) * (v - mean) / static_cast<double>(logits.size());
  const float scale = var > 0 ? static_cast<float>(0.1 / std::sqrt(var)) : 0.0f;
  for (float& v : router) v *= scale;
  block.router.copy_from(Tensor::from_vector(router, {E, C}));
}

PolicyChoice choose_layer_policy(MoEBlock& block, const Tensor& x, const Tensor& t, double budget, int64_t layer) {
  SMELT_CHECK(budget > 0, "--budget must be positive, got ", budget);
  std::vector<RoutingPolicy> candidates;
  for (int64_t k = 1; k <= block.num_experts(); ++k) candidates.push_back(RoutingPolicy::top_k(k));
  for (double p : {0.5, 0.6, 0.7, 0.8, 0.9, 0.95}) candidates.push_back(RoutingPolicy::top_p(p));
  PolicyChoice best;
  bool found = false;
  double lowest = 1e300;
  std::string lowest_policy;
  for (const RoutingPolicy& p : candidates) {
    const double err = relative_error(block, x, t, p);
    const double active = block.stats().mean_active_experts;
    if (err < lowest) lowest = err, lowest_policy = p.str();
    if (err <= budget && (!found || active < best.mean_active)) {
      best = {p, err, active};
      found = true;
    }
  }
  if (!found) {
    // A layer no policy fits (an early layer of a real model with outlier neurons, say) keeps
    // the most accurate policy rather than failing a run of many layers; the caller reports it.
    log_warn("layer " + std::to_string(layer) + ": no routing policy keeps the relative error within --budget " + std::to_string(budget) +
             "; keeping the most accurate, " + lowest_policy + " (error " + std::to_string(lowest) + ")");
    for (const RoutingPolicy& p : candidates)
      if (p.str() == lowest_policy) {
        best = {p, relative_error(block, x, t, p), block.stats().mean_active_experts};
        best.within_budget = false;
      }
  }
  return best;
}

LayerFit fit_moe_layer(MoEBlock& block, const Tensor& inputs, const Tensor& targets, const RoutingPolicy& policy, const LayerFitOptions& o) {
  o.validate();
  const int64_t N = inputs.size(0);
  SMELT_CHECK(targets.shape() == inputs.shape(), "layer fit: targets ", targets.str(), " do not match inputs ", inputs.str());
  // A fixed shuffle: the last `holdout` share measures the fit, the rest trains it.
  std::vector<int64_t> order(N);
  std::iota(order.begin(), order.end(), 0);
  Philox rng(o.seed);
  for (int64_t i = N - 1; i > 0; --i) std::swap(order[i], order[rng.next_u32() % (i + 1)]);
  const int64_t held = std::max<int64_t>(1, static_cast<int64_t>(std::llround(o.holdout * static_cast<double>(N))));
  SMELT_CHECK(N - held >= 1, "layer fit: ", N, " calibration tokens are too few");
  const std::vector<int64_t> test_idx(order.end() - held, order.end()), train_idx(order.begin(), order.end() - held);
  const Tensor xt = rows(inputs, test_idx), tt = rows(targets, test_idx);
  LayerFit fit;
  fit.error_before = relative_error(block, xt, tt, policy);
  std::vector<Tensor> params = {block.router, block.gate_proj, block.up_proj, block.down_proj};
  for (const Tensor* t : {&block.shared_gate_proj, &block.shared_up_proj, &block.shared_down_proj})
    if (t->defined()) params.push_back(*t);
  for (Tensor& p : params) p.set_requires_grad(true);
  AdamW opt(params, 0.9f, 0.95f, 1e-8f, 0.0f);
  const int64_t B = std::min(o.batch_tokens, static_cast<int64_t>(train_idx.size()));
  for (int64_t s = 0; s < o.steps; ++s) {
    std::vector<int64_t> idx(B);
    for (int64_t i = 0; i < B; ++i) idx[i] = train_idx[rng.next_u32() % train_idx.size()];
    const Tensor x = rows(inputs, idx), t = rows(targets, idx);
    opt.zero_grad();
    RoutingPolicy step_policy = policy;
    if (o.min_k > 0 && policy.kind == RoutingPolicy::Kind::TopK && o.min_k < policy.k)
      step_policy.k = o.min_k + static_cast<int64_t>(rng.next_u32() % static_cast<uint32_t>(policy.k - o.min_k + 1));
    Tensor y = ops::reshape(block.forward(ops::unsqueeze(x, 0), Tensor(), step_policy), {B, x.size(1)});
    Tensor loss = ops::hidden_state_loss(y, t, ops::HiddenLoss::MSE);
    if (block.auxiliary_loss().defined()) loss = ops::add(loss, block.auxiliary_loss());
    loss.backward();
    // Cosine decay to 10 % over the steps.
    const double lr = o.lr * (0.1 + 0.45 * (1 + std::cos(M_PI * static_cast<double>(s) / static_cast<double>(o.steps))));
    opt.step(static_cast<float>(lr));
  }
  opt.zero_grad();
  fit.error_after = relative_error(block, xt, tt, policy);
  return fit;
}

}  // namespace smelt
