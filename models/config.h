// The shape of a Llama-style transformer, under Hugging Face config.json field names.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace smelt {

struct ModelConfig {
  int64_t vocab_size = 256;
  int64_t hidden_size = 128;
  int64_t intermediate_size = 344;
  int64_t num_hidden_layers = 4;
  int64_t num_attention_heads = 4;
  int64_t num_key_value_heads = 4;
  int64_t max_position_embeddings = 2048;
  double rope_theta = 10000.0;
  double rope_scaling_factor = 1.0;  // HF rope_scaling {"type": "linear", "factor": f}
  double rms_norm_eps = 1e-5;
  double initializer_range = 0.02;
  bool tie_word_embeddings = false;
  // Biases on the query, key and value projections (Qwen2's attention; the output projection never has one).
  bool qkv_bias = false;

  // Mixture of experts (Mixtral / Qwen2-MoE / DeepSeek field names). 0 experts: every layer dense.
  int64_t num_local_experts = 0;
  int64_t num_experts_per_tok = 2;
  int64_t moe_intermediate_size = 0;        // width of each routed expert; 0 = intermediate_size
  int64_t decoder_sparse_step = 1;          // layer i is MoE when (i + 1) % step == 0
  std::string scoring_func = "softmax";     // router scores: "softmax" or "sigmoid"
  bool norm_topk_prob = true;               // renormalise the chosen experts' weights to sum to 1
  double routed_scaling_factor = 1.0;       // routed experts' weights × factor (DeepSeek-V3 field)
  // "scores": each chosen expert's output is weighted by its (renormalised, scaled) score;
  // "unit": the router only selects and chosen outputs are summed with weight 1 (MoEfication's
  // split FFN, exact with every expert chosen whatever the router; the router learns from the
  // balancing losses and its own fit, not from the weights).
  std::string routed_weights = "scores";
  double router_aux_loss_coef = 0.01;       // Switch/GShard load-balancing loss
  double router_z_loss_coef = 0.0;          // ST-MoE z-loss on the router logits
  std::string moe_balancing = "aux_loss";   // "aux_loss", "aux_free" (DeepSeek-V3 bias) or "none"
  double aux_free_update_rate = 1e-3;       // bias step per training step for "aux_free"
  double router_jitter_noise = 0.0;         // multiplicative uniform noise on router inputs in training
  double capacity_factor = 0.0;             // 0 = dropless; else slots per expert = factor · N·k / E
  std::string routing = "token_choice";     // or "expert_choice"
  int64_t shared_expert_intermediate_size = 0;  // always-on shared expert width; 0 = none
  bool shared_expert_gate = false;          // sigmoid gate on the shared expert's output
  // Per-layer inference routing ("top-k:K", "top-p:P[:MAX]"; dense layers' entries ignored);
  // empty: top-k with num_experts_per_tok everywhere. smelt moefy writes it.
  std::vector<std::string> routing_policies;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  bool is_moe_layer(int64_t layer) const { return num_local_experts > 0 && (layer + 1) % decoder_sparse_step == 0; }
  int64_t expert_size() const { return moe_intermediate_size > 0 ? moe_intermediate_size : intermediate_size; }
  // Parameters used per token under top-k routing (shared expert and attention included).
  int64_t active_parameter_count() const;
  // Throws a smelt::Error naming the first inconsistent field.
  void validate() const;
  void validate_moe() const;  // validate()'s checks of the MoE fields
  int64_t parameter_count() const;
};

}  // namespace smelt
