#include "models/config.h"

#include "runtime/error.h"

namespace smelt {

void ModelConfig::validate() const {
  SMELT_CHECK(vocab_size > 0, "vocab_size must be positive, got ", vocab_size);
  SMELT_CHECK(hidden_size > 0, "hidden_size must be positive, got ", hidden_size);
  SMELT_CHECK(intermediate_size > 0, "intermediate_size must be positive, got ", intermediate_size);
  SMELT_CHECK(num_hidden_layers > 0, "num_hidden_layers must be positive, got ", num_hidden_layers);
  SMELT_CHECK(num_attention_heads > 0, "num_attention_heads must be positive, got ", num_attention_heads);
  SMELT_CHECK(hidden_size % num_attention_heads == 0, "hidden_size (", hidden_size, ") must be divisible by num_attention_heads (",
              num_attention_heads, ")");
  SMELT_CHECK(head_dim() % 2 == 0, "head_dim = hidden_size / num_attention_heads = ", head_dim(), " must be even for RoPE");
  SMELT_CHECK(num_key_value_heads > 0 && num_attention_heads % num_key_value_heads == 0, "num_key_value_heads (",
              num_key_value_heads, ") must divide num_attention_heads (", num_attention_heads, ")");
  SMELT_CHECK(max_position_embeddings > 0, "max_position_embeddings must be positive, got ", max_position_embeddings);
  SMELT_CHECK(rope_theta > 0, "rope_theta must be positive, got ", rope_theta);
  SMELT_CHECK(rope_scaling_factor > 0, "rope_scaling.factor must be positive, got ", rope_scaling_factor);
  SMELT_CHECK(rms_norm_eps >= 0, "rms_norm_eps must be ≥ 0, got ", rms_norm_eps);
  SMELT_CHECK(initializer_range >= 0, "initializer_range must be ≥ 0, got ", initializer_range);
}

int64_t ModelConfig::parameter_count() const {
  const int64_t C = hidden_size, kv = num_key_value_heads * head_dim();
  const int64_t attn = C * C * 2 + C * kv * 2;
  const int64_t mlp = 3 * C * intermediate_size;
  const int64_t per_layer = attn + mlp + 2 * C;
  return vocab_size * C * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * per_layer + C;
}

}  // namespace smelt
