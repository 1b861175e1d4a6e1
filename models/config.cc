#include "models/config.h"

#include <cmath>

#include "runtime/error.h"

namespace smelt {

namespace {
// N: int64_t for the count itself, double for validate()'s bound (which must not overflow).
template <typename N>
N count_parameters(const ModelConfig& c, bool active_only) {
  const N C = static_cast<N>(c.hidden_size), kv = static_cast<N>(c.num_key_value_heads) * static_cast<N>(c.head_dim());
  const N attn = C * C * 2 + C * kv * 2;
  N total = static_cast<N>(c.vocab_size) * C * (c.tie_word_embeddings ? 1 : 2) + C;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    total += attn + 2 * C + (c.qkv_bias ? C + 2 * kv : 0);
    if (!c.is_moe_layer(i)) {
      total += 3 * C * static_cast<N>(c.intermediate_size);
      continue;
    }
    const N experts = static_cast<N>(active_only ? c.num_experts_per_tok : c.num_local_experts);
    total += experts * 3 * C * static_cast<N>(c.expert_size()) + static_cast<N>(c.num_local_experts) * C;  // experts + router
    total += 3 * C * static_cast<N>(c.shared_expert_intermediate_size) + (c.shared_expert_gate ? C : 0);
  }
  return total;
}
}  // namespace

void ModelConfig::validate() const {
  SMELT_CHECK(vocab_size > 0, "vocab_size must be positive, got ", vocab_size);
  SMELT_CHECK(hidden_size > 0, "hidden_size must be positive, got ", hidden_size);
  SMELT_CHECK(intermediate_size > 0, "intermediate_size must be positive, got ", intermediate_size);
  SMELT_CHECK(num_hidden_layers > 0 && num_hidden_layers <= 100000, "num_hidden_layers must be between 1 and 100000, got ", num_hidden_layers);
  SMELT_CHECK(num_attention_heads > 0, "num_attention_heads must be positive, got ", num_attention_heads);
  SMELT_CHECK(hidden_size % num_attention_heads == 0, "hidden_size (", hidden_size, ") must be divisible by num_attention_heads (",
              num_attention_heads, ")");
  SMELT_CHECK(head_dim() % 2 == 0, "head_dim = hidden_size / num_attention_heads = ", head_dim(), " must be even for RoPE");
  SMELT_CHECK(num_key_value_heads > 0 && num_attention_heads % num_key_value_heads == 0, "num_key_value_heads (",
              num_key_value_heads, ") must divide num_attention_heads (", num_attention_heads, ")");
  // 2^24 positions (16.7M) is over ten times the longest context of any model there is: a larger
  // value is a typo, and would size RoPE tables and KV caches past any memory.
  SMELT_CHECK(max_position_embeddings > 0 && max_position_embeddings <= (int64_t{1} << 24),
              "max_position_embeddings must be in 1..16777216, got ", max_position_embeddings);
  SMELT_CHECK(rope_theta > 0, "rope_theta must be positive, got ", rope_theta);
  SMELT_CHECK(rope_scaling_factor > 0, "rope_scaling.factor must be positive, got ", rope_scaling_factor);
  SMELT_CHECK(rms_norm_eps >= 0 && rms_norm_eps < 1, "rms_norm_eps must be in [0, 1), got ", rms_norm_eps);
  SMELT_CHECK(initializer_range >= 0, "initializer_range must be ≥ 0, got ", initializer_range);
  SMELT_CHECK(num_local_experts >= 0, "num_local_experts must be ≥ 0, got ", num_local_experts);
  if (num_local_experts > 0) validate_moe();
  // Every size a model derives (parameters, a tensor's elements) is an int64: refuse a config
  // whose parameter count would not fit with room to spare, before anything multiplies it.
  SMELT_CHECK(count_parameters<double>(*this, false) < 1e15, "the config describes ", count_parameters<double>(*this, false),
              " parameters; smelt takes at most 1e15 (hidden_size ", hidden_size, ", intermediate_size ", intermediate_size,
              ", vocab_size ", vocab_size, ", num_hidden_layers ", num_hidden_layers, ")");
}

void ModelConfig::validate_moe() const {
  SMELT_CHECK(num_experts_per_tok >= 1 && num_experts_per_tok <= num_local_experts, "num_experts_per_tok (", num_experts_per_tok,
              ") must be between 1 and num_local_experts (", num_local_experts, ")");
  SMELT_CHECK(moe_intermediate_size >= 0, "moe_intermediate_size must be ≥ 0, got ", moe_intermediate_size);
  SMELT_CHECK(decoder_sparse_step >= 1, "decoder_sparse_step must be ≥ 1, got ", decoder_sparse_step);
  SMELT_CHECK(scoring_func == "softmax" || scoring_func == "sigmoid", "scoring_func must be \"softmax\" or \"sigmoid\", got \"",
              scoring_func, "\"");
  SMELT_CHECK(moe_balancing == "aux_loss" || moe_balancing == "aux_free" || moe_balancing == "none",
              "moe_balancing must be \"aux_loss\", \"aux_free\" or \"none\", got \"", moe_balancing, "\"");
  SMELT_CHECK(routing == "token_choice" || routing == "expert_choice", "routing must be \"token_choice\" or \"expert_choice\", got \"",
              routing, "\"");
  SMELT_CHECK(router_aux_loss_coef >= 0 && router_aux_loss_coef <= 100, "router_aux_loss_coef must be in [0, 100], got ", router_aux_loss_coef);
  SMELT_CHECK(router_z_loss_coef >= 0 && router_z_loss_coef <= 100, "router_z_loss_coef must be in [0, 100], got ", router_z_loss_coef);
  SMELT_CHECK(aux_free_update_rate >= 0, "aux_free_update_rate must be ≥ 0, got ", aux_free_update_rate);
  SMELT_CHECK(router_jitter_noise >= 0 && router_jitter_noise < 1, "router_jitter_noise must be in [0, 1), got ", router_jitter_noise);
  SMELT_CHECK(routing_policies.empty() || (num_local_experts > 0 && static_cast<int64_t>(routing_policies.size()) == num_hidden_layers),
              "routing_policies needs one entry per layer (", num_hidden_layers, ") of an MoE model, got ", routing_policies.size());
  SMELT_CHECK(routed_weights == "scores" || routed_weights == "unit", "routed_weights must be \"scores\" or \"unit\", got \"",
              routed_weights, "\"");
  SMELT_CHECK(routed_scaling_factor > 0 && std::isfinite(routed_scaling_factor), "routed_scaling_factor must be positive, got ",
              routed_scaling_factor);
  SMELT_CHECK(capacity_factor >= 0, "capacity_factor must be positive (or absent for dropless), got ", capacity_factor);
  SMELT_CHECK(shared_expert_intermediate_size >= 0, "shared_expert_intermediate_size must be ≥ 0");
  SMELT_CHECK(!shared_expert_gate || shared_expert_intermediate_size > 0, "shared_expert_gate needs shared_expert_intermediate_size > 0");
}


int64_t ModelConfig::parameter_count() const { return count_parameters<int64_t>(*this, false); }
int64_t ModelConfig::active_parameter_count() const { return count_parameters<int64_t>(*this, true); }

}  // namespace smelt
