// A Llama-style decoder-only transformer: embeddings → N × [RMSNorm → GQA attention with RoPE →
// residual → RMSNorm → SwiGLU MLP → residual] → RMSNorm → LM head (tied or untied).
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "models/config.h"
#include "runtime/tensor.h"

namespace smelt {

struct Linear {
  Tensor weight;  // [out, in]
  Tensor forward(const Tensor& x) const;
};

struct RMSNorm {
  Tensor weight;  // [C]
  float eps = 1e-5f;
  Tensor forward(const Tensor& x) const;
};

// Keys and values of past tokens for incremental decoding, per layer [B, capacity, Hkv, D].
struct KVCache {
  std::vector<Tensor> keys, values;
  int64_t length = 0;  // tokens already cached
  int64_t capacity = 0;
};

struct Attention {
  Linear q_proj, k_proj, v_proj, o_proj;
  int64_t num_heads = 0, num_kv_heads = 0, head_dim = 0;
  float rope_theta = 10000.0f, rope_scaling = 1.0f;
  // x [B, T, C] → [B, T, C]. With a cache, the new keys/values are appended to layer `layer`.
  Tensor forward(const Tensor& x, KVCache* cache, size_t layer) const;
};

struct SwiGLUMLP {
  Linear gate_proj, up_proj, down_proj;
  Tensor forward(const Tensor& x) const;
};

struct Block {
  RMSNorm input_layernorm;
  Attention self_attn;
  RMSNorm post_attention_layernorm;
  SwiGLUMLP mlp;
  Tensor forward(const Tensor& x, KVCache* cache, size_t layer) const;
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Transformer {
 public:
  // Fresh weights: matrices ~ N(0, initializer_range²) from Philox(seed), norms = 1.
  static Transformer create(const ModelConfig& config, uint64_t seed);
  // Builds the model from named tensors (HF names); every expected tensor must be present with
  // the expected shape, and no unknown tensor may be left over. `source` names the file in errors.
  static Transformer from_tensors(const ModelConfig& config, const NamedTensors& tensors, const std::string& source);

  // ids [B, T] (integers) → logits [B, T, vocab].
  Tensor forward(const Tensor& ids, KVCache* cache = nullptr) const;
  // Final hidden states before the LM head, [B, T, C].
  Tensor hidden_states(const Tensor& ids, KVCache* cache = nullptr) const;
  KVCache make_cache(int64_t batch, int64_t capacity) const;

  // Parameters under Hugging Face Llama names, in a fixed order.
  NamedTensors named_parameters() const;
  std::vector<Tensor> parameters() const;
  const ModelConfig& config() const { return config_; }

 private:
  ModelConfig config_;
  Tensor embed_tokens_;  // [V, C]
  std::vector<Block> layers_;
  RMSNorm norm_;
  Tensor lm_head_;  // [V, C]; shares embed_tokens_ when tied
};

}  // namespace smelt
