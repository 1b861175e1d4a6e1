// The shape of a Llama-style transformer, under Hugging Face config.json field names.
#pragma once
#include <cstdint>
#include <string>

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

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  // Throws a smelt::Error naming the first inconsistent field.
  void validate() const;
  int64_t parameter_count() const;
};

}  // namespace smelt
