// A Llama-style decoder-only transformer: embeddings → N × [RMSNorm → GQA attention with RoPE →
// residual → RMSNorm → SwiGLU MLP → residual] → RMSNorm → LM head (tied or untied).
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "models/config.h"
#include "models/moe.h"
#include "runtime/tensor.h"

namespace smelt {

struct Linear {
  Tensor weight;  // [out, in]
  Tensor bias;    // [out], or undefined (only Qwen2's q, k and v projections have one)
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
  // key_start: see ops::attention (packed documents).
  Tensor forward(const Tensor& x, KVCache* cache, size_t layer, const Tensor& key_start = Tensor()) const;
};

struct SwiGLUMLP {
  Linear gate_proj, up_proj, down_proj;
  Tensor forward(const Tensor& x) const;
};

// Per-layer tensors recorded by the capture hooks (see Transformer::set_capture).
struct Transformer_Capture {
  std::vector<Tensor> ffn_input, ffn_output, block_output;
};

struct Block {
  RMSNorm input_layernorm;
  Attention self_attn;
  RMSNorm post_attention_layernorm;
  SwiGLUMLP mlp;                     // dense layers
  std::shared_ptr<MoEBlock> moe;     // MoE layers (mlp unused); shared so const models can update stats
  // Recompute the attention half (and a dense MLP half) in backward instead of keeping their
  // activations. MoE halves are never recomputed: their router jitter draws and balancing loss
  // belong to the one forward that the loss sees.
  bool checkpoint_activations = false;
  Tensor forward(const Tensor& x, KVCache* cache, size_t layer, const Tensor& token_mask, const RoutingPolicy& policy,
                 Transformer_Capture* capture = nullptr, const Tensor& key_start = Tensor()) const;
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Transformer {
 public:
  // Fresh weights: matrices ~ N(0, initializer_range²) from Philox(seed), norms = 1.
  static Transformer create(const ModelConfig& config, uint64_t seed);
  // Builds the model from named tensors (HF names); every expected tensor must be present with
  // the expected shape, and no unknown tensor may be left over. `source` names the file in errors.
  // weight_dtype: how the weight matrices are kept (see store_weights_in); norms are always f32.
  // experts: Mapped keeps each MoE projection's experts as a view of `tensors` where they already
  // lie one after another in one storage and in weight_dtype (a checkpoint mapped from disk, as
  // smelt writes them): an expert no token chooses is then never paged in. Otherwise, and for
  // InMemory, they are copied.
  enum class Experts { InMemory, Mapped };
  // The model lives where its tensors are, or on `place`: each tensor then goes there straight
  // from its source (a mapped file), without an owned copy on the host first.
  static Transformer from_tensors(const ModelConfig& config, const NamedTensors& tensors, const std::string& source,
                                  DType weight_dtype = DType::F32, Experts experts = Experts::InMemory,
                                  std::optional<Device> place = std::nullopt);

  // ids [B, T] (integers) → logits [B, T, vocab]. token_mask [B·T] marks the real tokens for MoE
  // balancing and statistics (undefined: all real). key_start [B, T] (optional): the first
  // position each token may attend to, for several documents packed into one sequence.
  Tensor forward(const Tensor& ids, KVCache* cache = nullptr, const Tensor& token_mask = Tensor(),
                 const Tensor& key_start = Tensor()) const;
  // The logits of the last position only, [B, 1, vocab]: what generation needs after a prompt
  // (the LM head is a fifth of SmolLM2's weights; the other positions' logits would be dropped).
  Tensor last_logits(const Tensor& ids, KVCache* cache) const;
  // Final hidden states before the LM head, [B, T, C].
  Tensor hidden_states(const Tensor& ids, KVCache* cache = nullptr, const Tensor& token_mask = Tensor(),
                       const Tensor& key_start = Tensor()) const;
  KVCache make_cache(int64_t batch, int64_t capacity) const;
  // The LM head [V, C] (the embedding matrix when tied): logits = hidden_states · lm_head_weightᵀ.
  const Tensor& lm_head_weight() const { return lm_head_; }

  // Trainable parameters in a fixed order; MoE experts appear stacked ([E, F, C] per projection).
  NamedTensors named_parameters() const;
  // Where the parameters live, and a copy of the model on another device (parameters, balancing
  // biases, routing policies; frozen parameters stay frozen).
  Device device() const;
  Transformer to(Device device) const;
  std::vector<Tensor> parameters() const;
  // The parameters that still require grad (what an optimizer updates), in the same order.
  NamedTensors trainable_parameters() const;
  // Freezes every parameter whose name matches one of the shell-style patterns
  // ("*.block_sparse_moe.gate.weight", "model.layers.0.*"); returns how many were frozen.
  // A pattern that matches nothing is an error (a typo must not silently train everything).
  int64_t freeze(const std::vector<std::string>& patterns);
  // Keeps every weight matrix (embeddings, attention and FFN projections, routers, experts, LM
  // head) in `dtype`. bf16 is for inference: it halves the weights' memory and the bytes each
  // decoded token streams; activations and arithmetic stay f32, and a bf16 matrix takes no
  // gradient (gradients still flow through it to the activations). f32 converts back, with the
  // bf16-rounded values; matrices frozen before the round trip stay frozen, the others train
  // again. Norm weights always stay f32. q8_0, q4_0 and q4_k (runtime/quant.h) quantise the
  // matrices in blocks along their rows, for decoding with integer dot products; routers, and
  // any matrix whose rows are not whole blocks, stay f32 (q4_k: q4_0, the same 4.5 bits per
  // weight, for rows that are whole 32-value blocks but not 256-value super-blocks).
  void store_weights_in(DType dtype);
  // Decoding's layout for q4_0, q8_0 and q4_k matrices: every dense one (embedding and LM head,
  // attention, dense FFN; experts stay as they are) whose rows come in whole groups of 8 is
  // interleaved by 8 rows (Q4_0X8, Q8_0X8, Q4_KX8: runtime/quant.h), which the dot path reads with one
  // register per 8 rows. Same values; an inference-only layout (export and checkpoints take the
  // model as loaded).
  void interleave_rows();
  // The type store_weights_in (or from_tensors) was given: most matrices are in it.
  DType weight_dtype() const { return weight_dtype_; }

  // Capture hooks: while enabled, every forward records per layer the input and output of the
  // FFN/MoE block and the hidden state after the block (the tensors themselves, in the graph).
  using Capture = Transformer_Capture;
  void set_capture(bool on) const;
  const Capture& captured() const { return *capture_; }
  // Every tensor of the model under Hugging Face names (Llama, Mixtral, or Qwen2-MoE with a
  // shared expert), experts one by one: what checkpoints store. Views, no copies.
  NamedTensors state_dict() const;
  const ModelConfig& config() const { return config_; }

  // Activation checkpointing of every block while training (see Block::checkpoint_activations).
  void set_activation_checkpointing(bool on);

  // ---- MoE
  // The routing policy per layer (entries for dense layers are ignored); one policy applies to all.
  void set_routing_policy(const RoutingPolicy& policy);
  void set_routing_policies(const std::vector<RoutingPolicy>& per_layer);
  const std::vector<RoutingPolicy>& routing_policies() const { return policies_; }
  // Sum of the MoE balancing losses of the last forward (undefined for a dense model).
  Tensor auxiliary_loss() const;
  // (layer, stats) of every MoE layer from the last forward.
  std::vector<std::pair<int64_t, MoEStats>> moe_stats() const;
  // The MoE layers' statistics of the last forward, still on the device (see MoEBlock::raw_stats),
  // for a caller that reads them with other values in one host read and hands them back.
  std::vector<Tensor> moe_raw_stats() const;
  void set_moe_stats_from_raw(const std::vector<float>& values) const;
  // Mean parameters used per token in the last forward (attention, embeddings and shared parts
  // count fully; routed experts by their mean number of active experts).
  double mean_active_parameters() const;
  Block& layer(size_t i) { return layers_[i]; }
  const Block& layer(size_t i) const { return layers_[i]; }
  size_t num_layers() const { return layers_.size(); }

 private:
  ModelConfig config_;
  DType weight_dtype_ = DType::F32;
  Tensor embed_tokens_;  // [V, C]
  std::vector<Block> layers_;
  RMSNorm norm_;
  Tensor lm_head_;  // [V, C]; shares embed_tokens_ when tied
  std::vector<RoutingPolicy> policies_;
  std::shared_ptr<Capture> capture_ = std::make_shared<Capture>();
  std::shared_ptr<bool> capturing_ = std::make_shared<bool>(false);
  std::vector<std::string> frozen_in_bf16_;  // matrices frozen when store_weights_in(BF16) ran
};

}  // namespace smelt
