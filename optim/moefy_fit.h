// MoEfication stage 1's recovery (LaDiMo): each MoE layer made by moefy() is trained on its own
// to reproduce the dense FFN it replaced, from the inputs that FFN saw on calibration tokens.
// Layers are independent (each sees the dense model's inputs, not the previous MoE layer's), so
// they are fitted one after another with one layer's activations in memory.
#pragma once
#include <vector>

#include "models/transformer.h"

namespace smelt {

struct LayerFitOptions {
  int64_t steps = 300;          // optimizer steps per layer
  int64_t batch_tokens = 1024;  // calibration tokens per step
  double lr = 1e-3;
  double holdout = 0.1;         // fraction of calibration tokens kept to measure the fit
  uint64_t seed = 0;
  // Each step draws k uniformly from [min_k, the policy's k] (0: always the policy's k), so the
  // layer also works with fewer experts and stage 2 can give some layers less.
  int64_t min_k = 0;
  void validate() const;
};

struct LayerFit {
  double error_before = 0, error_after = 0;  // relative squared error Σ‖moe − dense‖² / Σ‖dense‖² on the held-out tokens
};

// Router rows by ridge regression of each expert's output norm on the FFN input (centred over
// the experts per token, as softmax only sees differences), then shrunk so the logits spread
// ~0.1: the ranking of experts follows the fit while every weight stays near 1 (unit gates).
void fit_router_to_expert_norms(MoEBlock& block, const Tensor& inputs);

// Trains the block's router and experts (AdamW, relative MSE + the block's balancing loss) under
// `policy` so block(x) ≈ target for the calibration inputs [N, C] → targets [N, C].
LayerFit fit_moe_layer(MoEBlock& block, const Tensor& inputs, const Tensor& targets, const RoutingPolicy& policy, const LayerFitOptions& options);

// Stage 2: the routing policy of one layer with the fewest mean active experts whose relative
// error on (x → target) stays within `budget`, among top-k for k = 1..E and top-p for p in
// {0.5, 0.6, 0.7, 0.8, 0.9, 0.95}. Throws, naming the layer, when even all experts miss it.
// The layer's relative error under `policy` against t, the dense FFN's output for x
// (ops::hidden_state_loss's relative MSE, what --budget bounds).
double relative_error(MoEBlock& block, const Tensor& x, const Tensor& t, const RoutingPolicy& policy);

// The policy with the fewest mean active experts whose error is within the budget; when none
// is, the most accurate one, with within_budget false (and a warning logged).
struct PolicyChoice {
  RoutingPolicy policy;
  double error = 0, mean_active = 0;
  bool within_budget = true;
};
PolicyChoice choose_layer_policy(MoEBlock& block, const Tensor& inputs, const Tensor& targets, double budget, int64_t layer);

}  // namespace smelt
