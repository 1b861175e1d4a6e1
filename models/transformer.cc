#include "models/transformer.h"

#include <map>
#include <set>

#include "autograd/grad_mode.h"
#include "ops/ops.h"
#include "runtime/rng.h"

namespace smelt {

Tensor Linear::forward(const Tensor& x) const { return ops::linear(x, weight); }

Tensor RMSNorm::forward(const Tensor& x) const { return ops::rms_norm(x, weight, eps); }

Tensor Attention::forward(const Tensor& x, KVCache* cache, size_t layer) const {
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t offset = cache ? cache->length : 0;
  Tensor q = ops::reshape(q_proj.forward(x), {B, T, num_heads, head_dim});
  Tensor k = ops::reshape(k_proj.forward(x), {B, T, num_kv_heads, head_dim});
  Tensor v = ops::reshape(v_proj.forward(x), {B, T, num_kv_heads, head_dim});
  q = ops::rope(q, rope_theta, offset, rope_scaling);
  k = ops::rope(k, rope_theta, offset, rope_scaling);
  if (cache) {
    SMELT_CHECK(!grad_enabled(), "a KV cache is for inference: run it under NoGradGuard");
    SMELT_CHECK(offset + T <= cache->capacity, "KV cache full: ", offset, " + ", T, " tokens > capacity ", cache->capacity);
    ops::slice(cache->keys[layer], 1, offset, offset + T).copy_from(k);
    ops::slice(cache->values[layer], 1, offset, offset + T).copy_from(v);
    k = ops::slice(cache->keys[layer], 1, 0, offset + T);
    v = ops::slice(cache->values[layer], 1, 0, offset + T);
  }
  Tensor att = ops::attention(q, k, v, /*causal=*/true);
  return o_proj.forward(ops::reshape(att, {B, T, num_heads * head_dim}));
}

Tensor SwiGLUMLP::forward(const Tensor& x) const {
  return down_proj.forward(ops::swiglu(gate_proj.forward(x), up_proj.forward(x)));
}

Tensor Block::forward(const Tensor& x, KVCache* cache, size_t layer) const {
  Tensor h = ops::add(x, self_attn.forward(input_layernorm.forward(x), cache, layer));
  return ops::add(h, mlp.forward(post_attention_layernorm.forward(h)));
}

namespace {

// Expected parameter names and shapes for a config, in the canonical order.
std::vector<std::pair<std::string, Shape>> expected_parameters(const ModelConfig& c) {
  const int64_t C = c.hidden_size, F = c.intermediate_size, kv = c.num_key_value_heads * c.head_dim();
  std::vector<std::pair<std::string, Shape>> p;
  p.push_back({"model.embed_tokens.weight", {c.vocab_size, C}});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string l = "model.layers." + std::to_string(i) + ".";
    p.push_back({l + "input_layernorm.weight", {C}});
    p.push_back({l + "self_attn.q_proj.weight", {C, C}});
    p.push_back({l + "self_attn.k_proj.weight", {kv, C}});
    p.push_back({l + "self_attn.v_proj.weight", {kv, C}});
    p.push_back({l + "self_attn.o_proj.weight", {C, C}});
    p.push_back({l + "post_attention_layernorm.weight", {C}});
    p.push_back({l + "mlp.gate_proj.weight", {F, C}});
    p.push_back({l + "mlp.up_proj.weight", {F, C}});
    p.push_back({l + "mlp.down_proj.weight", {C, F}});
  }
  p.push_back({"model.norm.weight", {C}});
  if (!c.tie_word_embeddings) p.push_back({"lm_head.weight", {c.vocab_size, C}});
  return p;
}

bool is_norm(const std::string& name) { return name.find("norm.weight") != std::string::npos; }

}  // namespace

Transformer Transformer::from_tensors(const ModelConfig& config, const NamedTensors& tensors, const std::string& source) {
  config.validate();
  std::map<std::string, Tensor> by_name;
  for (const auto& [name, t] : tensors) by_name[name] = t;
  std::map<std::string, Tensor> params;
  for (const auto& [name, shape] : expected_parameters(config)) {
    auto it = by_name.find(name);
    SMELT_CHECK(it != by_name.end(), source, ": tensor '", name, "' is missing (the config expects ", shape_str(shape), ")");
    SMELT_CHECK(it->second.shape() == shape, source, ": tensor '", name, "' has shape ", shape_str(it->second.shape()),
                " but the config expects ", shape_str(shape));
    Tensor p = it->second.to(DType::F32).clone();
    p.set_requires_grad(true);
    params[name] = p;
    by_name.erase(it);
  }
  if (config.tie_word_embeddings) by_name.erase("lm_head.weight");  // some exporters write the tied copy
  SMELT_CHECK(by_name.empty(), source, ": unexpected tensor '", by_name.begin()->first, "' for this config");

  Transformer m;
  m.config_ = config;
  const float eps = static_cast<float>(config.rms_norm_eps);
  m.embed_tokens_ = params["model.embed_tokens.weight"];
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    const std::string l = "model.layers." + std::to_string(i) + ".";
    Block b;
    b.input_layernorm = {params[l + "input_layernorm.weight"], eps};
    b.post_attention_layernorm = {params[l + "post_attention_layernorm.weight"], eps};
    b.self_attn.q_proj.weight = params[l + "self_attn.q_proj.weight"];
    b.self_attn.k_proj.weight = params[l + "self_attn.k_proj.weight"];
    b.self_attn.v_proj.weight = params[l + "self_attn.v_proj.weight"];
    b.self_attn.o_proj.weight = params[l + "self_attn.o_proj.weight"];
    b.self_attn.num_heads = config.num_attention_heads;
    b.self_attn.num_kv_heads = config.num_key_value_heads;
    b.self_attn.head_dim = config.head_dim();
    b.self_attn.rope_theta = static_cast<float>(config.rope_theta);
    b.self_attn.rope_scaling = static_cast<float>(config.rope_scaling_factor);
    b.mlp.gate_proj.weight = params[l + "mlp.gate_proj.weight"];
    b.mlp.up_proj.weight = params[l + "mlp.up_proj.weight"];
    b.mlp.down_proj.weight = params[l + "mlp.down_proj.weight"];
    m.layers_.push_back(b);
  }
  m.norm_ = {params["model.norm.weight"], eps};
  m.lm_head_ = config.tie_word_embeddings ? m.embed_tokens_ : params["lm_head.weight"];
  return m;
}

Transformer Transformer::create(const ModelConfig& config, uint64_t seed) {
  config.validate();
  Philox rng(seed);
  NamedTensors tensors;
  for (const auto& [name, shape] : expected_parameters(config)) {
    if (is_norm(name)) tensors.push_back({name, Tensor::ones(shape)});
    else tensors.push_back({name, Tensor::randn(shape, rng, 0.0f, static_cast<float>(config.initializer_range))});
  }
  return from_tensors(config, tensors, "initialisation");
}

Tensor Transformer::hidden_states(const Tensor& ids, KVCache* cache) const {
  SMELT_CHECK(ids.dim() == 2, "transformer input must be token ids [batch, seq], got ", ids.str());
  const int64_t past = cache ? cache->length : 0;
  SMELT_CHECK(past + ids.size(1) <= config_.max_position_embeddings, "sequence of ", past + ids.size(1),
              " tokens exceeds max_position_embeddings = ", config_.max_position_embeddings);
  Tensor x = ops::embedding(embed_tokens_, ids);
  for (size_t i = 0; i < layers_.size(); ++i) x = layers_[i].forward(x, cache, i);
  if (cache) cache->length += ids.size(1);
  return norm_.forward(x);
}

Tensor Transformer::forward(const Tensor& ids, KVCache* cache) const {
  return ops::linear(hidden_states(ids, cache), lm_head_);
}

KVCache Transformer::make_cache(int64_t batch, int64_t capacity) const {
  KVCache c;
  c.capacity = capacity;
  for (size_t i = 0; i < layers_.size(); ++i) {
    c.keys.push_back(Tensor::zeros({batch, capacity, config_.num_key_value_heads, config_.head_dim()}));
    c.values.push_back(Tensor::zeros({batch, capacity, config_.num_key_value_heads, config_.head_dim()}));
  }
  return c;
}

NamedTensors Transformer::named_parameters() const {
  NamedTensors p;
  p.push_back({"model.embed_tokens.weight", embed_tokens_});
  for (size_t i = 0; i < layers_.size(); ++i) {
    const std::string l = "model.layers." + std::to_string(i) + ".";
    const Block& b = layers_[i];
    p.push_back({l + "input_layernorm.weight", b.input_layernorm.weight});
    p.push_back({l + "self_attn.q_proj.weight", b.self_attn.q_proj.weight});
    p.push_back({l + "self_attn.k_proj.weight", b.self_attn.k_proj.weight});
    p.push_back({l + "self_attn.v_proj.weight", b.self_attn.v_proj.weight});
    p.push_back({l + "self_attn.o_proj.weight", b.self_attn.o_proj.weight});
    p.push_back({l + "post_attention_layernorm.weight", b.post_attention_layernorm.weight});
    p.push_back({l + "mlp.gate_proj.weight", b.mlp.gate_proj.weight});
    p.push_back({l + "mlp.up_proj.weight", b.mlp.up_proj.weight});
    p.push_back({l + "mlp.down_proj.weight", b.mlp.down_proj.weight});
  }
  p.push_back({"model.norm.weight", norm_.weight});
  if (!config_.tie_word_embeddings) p.push_back({"lm_head.weight", lm_head_});
  return p;
}

std::vector<Tensor> Transformer::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

}  // namespace smelt
