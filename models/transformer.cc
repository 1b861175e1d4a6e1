#include "models/transformer.h"

#include "runtime/quant.h"

#include <fnmatch.h>

#include <map>
#include <set>

#include "autograd/checkpoint.h"
#include "autograd/grad_mode.h"
#include "ops/ops.h"
#include "runtime/rng.h"

namespace smelt {

Tensor Linear::forward(const Tensor& x) const { return ops::linear(x, weight, bias); }

Tensor RMSNorm::forward(const Tensor& x) const { return ops::rms_norm(x, weight, eps); }

Tensor Attention::forward(const Tensor& x, KVCache* cache, size_t layer, const Tensor& key_start) const {
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t offset = cache ? cache->length : 0;
  // One call for the three projections: in inference the CPU runs them in one parallel region.
  const std::vector<Tensor> qkv =
      ops::linears(x, {q_proj.weight, k_proj.weight, v_proj.weight}, {q_proj.bias, k_proj.bias, v_proj.bias});
  Tensor q = ops::reshape(qkv[0], {B, T, num_heads, head_dim});
  Tensor k = ops::reshape(qkv[1], {B, T, num_kv_heads, head_dim});
  Tensor v = ops::reshape(qkv[2], {B, T, num_kv_heads, head_dim});
  q = ops::rope(std::move(q), rope_theta, offset, rope_scaling);
  k = ops::rope(std::move(k), rope_theta, offset, rope_scaling);
  if (cache) {
    SMELT_CHECK(!grad_enabled(), "a KV cache is for inference: run it under NoGradGuard");
    SMELT_CHECK(offset + T <= cache->capacity, "KV cache full: ", offset, " + ", T, " tokens > capacity ", cache->capacity);
    ops::slice(cache->keys[layer], 1, offset, offset + T).copy_from(k);
    ops::slice(cache->values[layer], 1, offset, offset + T).copy_from(v);
    k = ops::slice(cache->keys[layer], 1, 0, offset + T);
    v = ops::slice(cache->values[layer], 1, 0, offset + T);
  }
  SMELT_CHECK(!cache || !key_start.defined(), "packed documents (key_start) are for training, not KV-cache decoding");
  Tensor att = ops::attention(q, k, v, /*causal=*/true, 0.0f, key_start);
  return o_proj.forward(ops::reshape(att, {B, T, num_heads * head_dim}));
}

Tensor SwiGLUMLP::forward(const Tensor& x) const {
  const std::vector<Tensor> gate_up = ops::linears(x, {gate_proj.weight, up_proj.weight});
  return down_proj.forward(ops::swiglu(gate_up[0], gate_up[1]));
}

Tensor Block::forward(const Tensor& x, KVCache* cache, size_t layer, const Tensor& token_mask, const RoutingPolicy& policy,
                      Transformer_Capture* capture, const Tensor& key_start) const {
  // Recomputed halves capture their weights by value (shared tensors), not the block.
  const bool recompute = checkpoint_activations && cache == nullptr && capture == nullptr && grad_enabled();
  Tensor h, n;  // the residual stream after attention, and its post-attention norm
  if (recompute) {
    h = checkpoint(
        [attn = self_attn, norm = input_layernorm, layer, key_start](const std::vector<Tensor>& in) {
          return ops::add(in[0], attn.forward(norm.forward(in[0]), nullptr, layer, key_start));
        },
        {x});
    if (!moe) {
      return checkpoint(
          [mlp_half = mlp, norm = post_attention_layernorm](const std::vector<Tensor>& in) {
            return ops::add(in[0], mlp_half.forward(norm.forward(in[0])));
          },
          {h});
    }
    n = post_attention_layernorm.forward(h);
  } else {
    const Tensor a = self_attn.forward(input_layernorm.forward(x), cache, layer, key_start);
    ops::ResidualNorm r = ops::add_rms_norm(x, a, post_attention_layernorm.weight, post_attention_layernorm.eps);
    h = std::move(r.sum);
    n = std::move(r.normed);
  }
  Tensor f = moe ? moe->forward(n, token_mask, policy) : mlp.forward(n);
  Tensor out = ops::add(h, f);
  if (capture) {
    capture->ffn_input.push_back(n);
    capture->ffn_output.push_back(f);
    capture->block_output.push_back(out);
  }
  return out;
}

namespace {

// Hugging Face names of one MoE layer: Mixtral layout, or Qwen2-MoE when there is a shared expert.
struct MoENames {
  std::string prefix;  // "model.layers.3.block_sparse_moe." or "model.layers.3.mlp."
  bool qwen = false;
  std::string router() const { return prefix + "gate.weight"; }
  std::string expert(int64_t e, const char* which) const {  // which: "gate", "up", "down"
    const std::string w = std::string(which);
    const std::string name = qwen ? w + "_proj" : (w == "gate" ? "w1" : w == "up" ? "w3" : "w2");
    return prefix + "experts." + std::to_string(e) + "." + name + ".weight";
  }
  std::string stacked(const char* which) const { return prefix + "experts." + which + "_proj"; }
  std::string shared(const char* which) const { return prefix + "shared_expert." + which + "_proj.weight"; }
  std::string shared_gate() const { return prefix + "shared_expert_gate.weight"; }
  std::string bias() const { return prefix + "e_score_correction_bias"; }
};

MoENames moe_names(const ModelConfig& c, int64_t layer) {
  MoENames n;
  n.qwen = c.shared_expert_intermediate_size > 0;
  n.prefix = "model.layers." + std::to_string(layer) + (n.qwen ? ".mlp." : ".block_sparse_moe.");
  return n;
}

// Expected state-dict names and shapes for a config (HF layout), in the canonical order.
std::vector<std::pair<std::string, Shape>> expected_state(const ModelConfig& c) {
  const int64_t C = c.hidden_size, F = c.intermediate_size, kv = c.num_key_value_heads * c.head_dim();
  std::vector<std::pair<std::string, Shape>> p;
  p.push_back({"model.embed_tokens.weight", {c.vocab_size, C}});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string l = "model.layers." + std::to_string(i) + ".";
    p.push_back({l + "input_layernorm.weight", {C}});
    p.push_back({l + "self_attn.q_proj.weight", {C, C}});
    p.push_back({l + "self_attn.k_proj.weight", {kv, C}});
    p.push_back({l + "self_attn.v_proj.weight", {kv, C}});
    if (c.qkv_bias) {
      p.push_back({l + "self_attn.q_proj.bias", {C}});
      p.push_back({l + "self_attn.k_proj.bias", {kv}});
      p.push_back({l + "self_attn.v_proj.bias", {kv}});
    }
    p.push_back({l + "self_attn.o_proj.weight", {C, C}});
    p.push_back({l + "post_attention_layernorm.weight", {C}});
    if (!c.is_moe_layer(i)) {
      p.push_back({l + "mlp.gate_proj.weight", {F, C}});
      p.push_back({l + "mlp.up_proj.weight", {F, C}});
      p.push_back({l + "mlp.down_proj.weight", {C, F}});
      continue;
    }
    const MoENames n = moe_names(c, i);
    const int64_t E = c.num_local_experts, Fe = c.expert_size(), Fs = c.shared_expert_intermediate_size;
    p.push_back({n.router(), {E, C}});
    for (int64_t e = 0; e < E; ++e) {
      p.push_back({n.expert(e, "gate"), {Fe, C}});
      p.push_back({n.expert(e, "up"), {Fe, C}});
      p.push_back({n.expert(e, "down"), {C, Fe}});
    }
    if (Fs > 0) {
      p.push_back({n.shared("gate"), {Fs, C}});
      p.push_back({n.shared("up"), {Fs, C}});
      p.push_back({n.shared("down"), {C, Fs}});
      if (c.shared_expert_gate) p.push_back({n.shared_gate(), {1, C}});
    }
    if (c.moe_balancing == "aux_free") p.push_back({n.bias(), {E}});
  }
  p.push_back({"model.norm.weight", {C}});
  if (!c.tie_word_embeddings) p.push_back({"lm_head.weight", {c.vocab_size, C}});
  return p;
}

bool is_norm(const std::string& name) { return name.find("norm.weight") != std::string::npos; }
bool is_bias(const std::string& name) { return name.find("e_score_correction_bias") != std::string::npos; }
bool is_projection_bias(const std::string& name) { return name.size() > 10 && name.compare(name.size() - 10, 10, "_proj.bias") == 0; }

// Whether per-expert matrices lie one after another in one storage, so [E, rows, cols] is a view.
bool adjacent_in_one_storage(const std::vector<Tensor>& parts) {
  for (size_t e = 0; e < parts.size(); ++e)
    if (!parts[e].is_contiguous() || parts[e].storage() != parts[0].storage() || parts[e].dtype() != parts[0].dtype() ||
        parts[e].shape() != parts[0].shape() || parts[e].offset() != parts[0].offset() + static_cast<int64_t>(e) * parts[0].numel())
      return false;
  return true;
}

// Stacks per-expert matrices [rows, cols] into one [E, rows, cols] tensor: a view of them when
// `view` allows and they are adjacent, else a copy.
// The experts' [rows, cols] matrices as one [E, rows, cols] tensor on `device` (a view of the
// mapped file where `view` and they lie side by side in it).
Tensor stack_experts(const std::vector<Tensor>& parts, Device device, bool view = false) {
  const Shape& s = parts[0].shape();
  if (view && adjacent_in_one_storage(parts)) {
    const Shape stacked{static_cast<int64_t>(parts.size()), s[0], s[1]};
    return Tensor::view_of(parts[0].storage(), stacked, contiguous_strides(stacked), parts[0].offset(), parts[0].dtype());
  }
  Tensor out = Tensor::empty({static_cast<int64_t>(parts.size()), s[0], s[1]}, parts[0].dtype(), device);
  for (size_t e = 0; e < parts.size(); ++e) ops::reshape(ops::slice(out, 0, e, e + 1), s).copy_from(parts[e]);
  return out;
}

// The dtype a matrix is kept in when the model's weights are `dtype`. Quantised models keep their
// routers in f32 (a few values that choose experts, as llama.cpp does) and any matrix whose rows
// are not whole blocks of 32. Q4_K's rows that are whole 32-value blocks but not 256-value
// super-blocks (SmolLM2's hidden size is 576) take Q4_0, the same 4.5 bits per weight, where
// llama.cpp's quantiser takes Q5_0.
DType stored_dtype(const Tensor& t, bool router, DType dtype) {
  if (!is_quantized(dtype)) return dtype;
  if (router || t.size(-1) % kQuantBlock != 0) return DType::F32;
  if (t.size(-1) % dtype_block_values(dtype) != 0) return DType::Q4_0;
  return dtype;
}
bool is_router(const std::string& name) {
  return name.find("shared_expert_gate") != std::string::npos || (name.find(".gate.weight") != std::string::npos && name.find("_proj") == std::string::npos);
}

void check_weight_dtype(DType dtype) {
  SMELT_CHECK(dtype == DType::F32 || dtype == DType::BF16 || is_quantized(dtype), "model weights can be kept in f32, bf16, q8_0, q4_0 or q4_k, not ",
              dtype_name(dtype));
}

}  // namespace

Transformer Transformer::from_tensors(const ModelConfig& config, const NamedTensors& tensors, const std::string& source,
                                      DType weight_dtype, Experts experts, std::optional<Device> place) {
  config.validate();
  check_weight_dtype(weight_dtype);
  std::map<std::string, Tensor> by_name;
  for (const auto& [name, t] : tensors) by_name[name] = t;
  std::map<std::string, Tensor> params;
  // The model lives where its tensors are (all on one device), or on `place`.
  const Device from = tensors.empty() ? Device::cpu() : tensors.front().second.device();
  for (const auto& [name, t] : tensors)
    SMELT_CHECK(t.device() == from, source, ": tensor '", name, "' is on ", t.device().str(), ", the others on ", from.str());
  const Device device = place.value_or(from);
  SMELT_CHECK(device == from || experts == Experts::InMemory, source, ": experts stay mapped on the host; they cannot be placed on ", device.str());
  for (const auto& [name, shape] : expected_state(config)) {
    auto it = by_name.find(name);
    if (it == by_name.end() && is_bias(name)) {  // a balancing bias may be absent: start from zero
      params[name] = Tensor::zeros(shape, DType::F32, device);
      continue;
    }
    SMELT_CHECK(it != by_name.end(), source, ": tensor '", name, "' is missing (the config expects ", shape_str(shape), ")");
    SMELT_CHECK(it->second.shape() == shape, source, ": tensor '", name, "' has shape ", shape_str(it->second.shape()),
                " but the config expects ", shape_str(shape));
    const bool matrix = !is_norm(name) && !is_bias(name) && !is_projection_bias(name);
    Tensor converted = it->second.to(matrix ? stored_dtype(it->second, is_router(name), weight_dtype) : DType::F32);
    // Owned, not a view of the file; experts stay views when they are to be mapped (stacked below).
    const bool keep_view = experts == Experts::Mapped && name.find(".experts.") != std::string::npos;
    const bool expert_part = name.find(".experts.") != std::string::npos;  // copied once, into its stack on the device
    if (device != from && !expert_part) params[name] = converted.to(device);  // straight from the file's pages to the device
    else if (device != from) params[name] = converted;
    else params[name] = converted.same(it->second) && !keep_view ? converted.clone() : converted;
    by_name.erase(it);
  }
  if (config.tie_word_embeddings) by_name.erase("lm_head.weight");  // some exporters write the tied copy
  SMELT_CHECK(by_name.empty(), source, ": unexpected tensor '", by_name.begin()->first, "' for this config");
  auto trainable = [&](const std::string& name) {
    Tensor t = params.at(name);
    t.set_requires_grad(t.dtype() == DType::F32);  // bf16 weights are for inference
    return t;
  };

  Transformer m;
  m.config_ = config;
  m.weight_dtype_ = weight_dtype;
  const float eps = static_cast<float>(config.rms_norm_eps);
  m.embed_tokens_ = trainable("model.embed_tokens.weight");
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    const std::string l = "model.layers." + std::to_string(i) + ".";
    Block b;
    b.input_layernorm = {trainable(l + "input_layernorm.weight"), eps};
    b.post_attention_layernorm = {trainable(l + "post_attention_layernorm.weight"), eps};
    b.self_attn.q_proj.weight = trainable(l + "self_attn.q_proj.weight");
    b.self_attn.k_proj.weight = trainable(l + "self_attn.k_proj.weight");
    b.self_attn.v_proj.weight = trainable(l + "self_attn.v_proj.weight");
    b.self_attn.o_proj.weight = trainable(l + "self_attn.o_proj.weight");
    if (config.qkv_bias) {
      b.self_attn.q_proj.bias = trainable(l + "self_attn.q_proj.bias");
      b.self_attn.k_proj.bias = trainable(l + "self_attn.k_proj.bias");
      b.self_attn.v_proj.bias = trainable(l + "self_attn.v_proj.bias");
    }
    b.self_attn.num_heads = config.num_attention_heads;
    b.self_attn.num_kv_heads = config.num_key_value_heads;
    b.self_attn.head_dim = config.head_dim();
    b.self_attn.rope_theta = static_cast<float>(config.rope_theta);
    b.self_attn.rope_scaling = static_cast<float>(config.rope_scaling_factor);
    if (!config.is_moe_layer(i)) {
      b.mlp.gate_proj.weight = trainable(l + "mlp.gate_proj.weight");
      b.mlp.up_proj.weight = trainable(l + "mlp.up_proj.weight");
      b.mlp.down_proj.weight = trainable(l + "mlp.down_proj.weight");
    } else {
      const MoENames n = moe_names(config, i);
      auto moe = std::make_shared<MoEBlock>(config, i);
      moe->router = trainable(n.router());
      std::vector<Tensor> g, u, d;
      for (int64_t e = 0; e < config.num_local_experts; ++e) {
        g.push_back(params.at(n.expert(e, "gate")));
        u.push_back(params.at(n.expert(e, "up")));
        d.push_back(params.at(n.expert(e, "down")));
      }
      const bool view = experts == Experts::Mapped;
      moe->gate_proj = stack_experts(g, device, view).set_requires_grad(weight_dtype == DType::F32);
      moe->up_proj = stack_experts(u, device, view).set_requires_grad(weight_dtype == DType::F32);
      moe->down_proj = stack_experts(d, device, view).set_requires_grad(weight_dtype == DType::F32);
      if (config.shared_expert_intermediate_size > 0) {
        moe->shared_gate_proj = trainable(n.shared("gate"));
        moe->shared_up_proj = trainable(n.shared("up"));
        moe->shared_down_proj = trainable(n.shared("down"));
        if (config.shared_expert_gate) moe->shared_expert_gate = trainable(n.shared_gate());
      }
      moe->score_bias = config.moe_balancing == "aux_free" ? params.at(n.bias()) : Tensor::zeros({config.num_local_experts}, DType::F32, device);
      b.moe = moe;
    }
    m.layers_.push_back(b);
  }
  m.norm_ = {trainable("model.norm.weight"), eps};
  m.lm_head_ = config.tie_word_embeddings ? m.embed_tokens_ : trainable("lm_head.weight");
  m.policies_.assign(config.num_hidden_layers, RoutingPolicy::top_k(config.num_experts_per_tok));
  if (!config.routing_policies.empty()) {
    std::vector<RoutingPolicy> per_layer;
    for (const std::string& spec : config.routing_policies) per_layer.push_back(RoutingPolicy::parse(spec));
    m.set_routing_policies(per_layer);
  }
  return m;
}

Transformer Transformer::create(const ModelConfig& config, uint64_t seed) {
  config.validate();
  Philox rng(seed);
  NamedTensors tensors;
  for (const auto& [name, shape] : expected_state(config)) {
    if (is_norm(name)) tensors.push_back({name, Tensor::ones(shape)});
    else if (is_bias(name) || is_projection_bias(name)) tensors.push_back({name, Tensor::zeros(shape)});
    else tensors.push_back({name, Tensor::randn(shape, rng, 0.0f, static_cast<float>(config.initializer_range))});
  }
  return from_tensors(config, tensors, "initialisation");
}

Tensor Transformer::hidden_states(const Tensor& ids, KVCache* cache, const Tensor& token_mask, const Tensor& key_start) const {
  SMELT_CHECK(ids.dim() == 2, "transformer input must be token ids [batch, seq], got ", ids.str());
  const int64_t past = cache ? cache->length : 0;
  SMELT_CHECK(past + ids.size(1) <= config_.max_position_embeddings, "sequence of ", past + ids.size(1),
              " tokens exceeds max_position_embeddings = ", config_.max_position_embeddings);
  Tensor x = ops::embedding(embed_tokens_, ids);
  Capture* capture = *capturing_ ? capture_.get() : nullptr;
  if (capture) *capture = Capture();
  for (size_t i = 0; i < layers_.size(); ++i) x = layers_[i].forward(x, cache, i, token_mask, policies_[i], capture, key_start);
  if (cache) cache->length += ids.size(1);
  return norm_.forward(x);
}

Tensor Transformer::forward(const Tensor& ids, KVCache* cache, const Tensor& token_mask, const Tensor& key_start) const {
  return ops::linear(hidden_states(ids, cache, token_mask, key_start), lm_head_);
}

Tensor Transformer::last_logits(const Tensor& ids, KVCache* cache) const {
  const Tensor h = hidden_states(ids, cache);
  return ops::linear(ops::slice(h, 1, h.size(1) - 1, h.size(1)), lm_head_);
}

KVCache Transformer::make_cache(int64_t batch, int64_t capacity) const {
  KVCache c;
  c.capacity = capacity;
  for (size_t i = 0; i < layers_.size(); ++i) {
    c.keys.push_back(Tensor::zeros({batch, capacity, config_.num_key_value_heads, config_.head_dim()}, DType::F32, device()));
    c.values.push_back(Tensor::zeros({batch, capacity, config_.num_key_value_heads, config_.head_dim()}, DType::F32, device()));
  }
  return c;
}

Device Transformer::device() const { return embed_tokens_.device(); }

Transformer Transformer::to(Device device) const {
  if (device == this->device()) return *this;
  // Each tensor once onto the device (not moved, then cloned there: twice the model at the peak).
  Transformer m = from_tensors(config_, state_dict(), "model moved to " + device.str(), weight_dtype(), Experts::InMemory, device);
  m.policies_ = policies_;
  std::set<std::string> frozen;
  for (const auto& [name, t] : named_parameters())
    if (!t.requires_grad()) frozen.insert(name);
  for (auto [name, t] : m.named_parameters())  // handles: clearing the flag reaches the model's tensor
    if (frozen.count(name)) t.set_requires_grad(false);
  return m;
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
    if (b.self_attn.q_proj.bias.defined()) {
      p.push_back({l + "self_attn.q_proj.bias", b.self_attn.q_proj.bias});
      p.push_back({l + "self_attn.k_proj.bias", b.self_attn.k_proj.bias});
      p.push_back({l + "self_attn.v_proj.bias", b.self_attn.v_proj.bias});
    }
    p.push_back({l + "self_attn.o_proj.weight", b.self_attn.o_proj.weight});
    p.push_back({l + "post_attention_layernorm.weight", b.post_attention_layernorm.weight});
    if (!b.moe) {
      p.push_back({l + "mlp.gate_proj.weight", b.mlp.gate_proj.weight});
      p.push_back({l + "mlp.up_proj.weight", b.mlp.up_proj.weight});
      p.push_back({l + "mlp.down_proj.weight", b.mlp.down_proj.weight});
      continue;
    }
    const MoENames n = moe_names(config_, static_cast<int64_t>(i));
    const MoEBlock& m = *b.moe;
    p.push_back({n.router(), m.router});
    p.push_back({n.stacked("gate"), m.gate_proj});
    p.push_back({n.stacked("up"), m.up_proj});
    p.push_back({n.stacked("down"), m.down_proj});
    if (m.shared_gate_proj.defined()) {
      p.push_back({n.shared("gate"), m.shared_gate_proj});
      p.push_back({n.shared("up"), m.shared_up_proj});
      p.push_back({n.shared("down"), m.shared_down_proj});
      if (m.shared_expert_gate.defined()) p.push_back({n.shared_gate(), m.shared_expert_gate});
    }
  }
  p.push_back({"model.norm.weight", norm_.weight});
  if (!config_.tie_word_embeddings) p.push_back({"lm_head.weight", lm_head_});
  return p;
}

NamedTensors Transformer::state_dict() const {
  NamedTensors out;
  for (const auto& [name, t] : named_parameters()) {
    const size_t at = name.rfind("experts.");
    if (at == std::string::npos || t.dim() != 3) {
      out.push_back({name, t});
      continue;
    }
    // Stacked experts → one HF tensor per expert (views of the stack).
    const int64_t layer = std::stoll(name.substr(std::string("model.layers.").size()));
    const MoENames n = moe_names(config_, layer);
    const std::string which = name.substr(at + 8, name.size() - at - 8 - 5);  // "gate", "up" or "down"
    for (int64_t e = 0; e < t.size(0); ++e)
      out.push_back({n.expert(e, which.c_str()), ops::reshape(ops::slice(t.detach(), 0, e, e + 1), {t.size(1), t.size(2)})});
    if (which == "down" && config_.moe_balancing == "aux_free") out.push_back({n.bias(), layers_[layer].moe->score_bias});
  }
  return out;
}

void Transformer::store_weights_in(DType dtype) {
  check_weight_dtype(dtype);
  if (dtype != DType::F32 && weight_dtype() == DType::F32) {  // such matrices take no gradient: remember which were frozen
    frozen_in_bf16_.clear();
    for (const auto& [name, t] : named_parameters())
      if (t.dim() >= 2 && !t.requires_grad()) frozen_in_bf16_.push_back(name);
  }
  auto convert = [dtype](Tensor& t, bool router = false) {
    if (!t.defined()) return;
    const DType want = stored_dtype(t, router, dtype);
    if (t.dtype() == want || (is_interleaved(t.dtype()) && x8_base(t.dtype()) == want)) return;  // interleaved rows are the same blocks
    t = t.to(DType::F32).to(want);  // a fresh tensor (through f32 between two narrow types): the old one is freed once nothing else holds it
    t.set_requires_grad(want == DType::F32);
  };
  convert(embed_tokens_);
  for (Block& b : layers_) {
    for (Linear* l : {&b.self_attn.q_proj, &b.self_attn.k_proj, &b.self_attn.v_proj, &b.self_attn.o_proj, &b.mlp.gate_proj,
                      &b.mlp.up_proj, &b.mlp.down_proj})
      convert(l->weight);
    if (!b.moe) continue;
    MoEBlock& m = *b.moe;
    for (Tensor* t : {&m.gate_proj, &m.up_proj, &m.down_proj, &m.shared_gate_proj, &m.shared_up_proj, &m.shared_down_proj}) convert(*t);
    convert(m.router, true);
    convert(m.shared_expert_gate, true);
  }
  if (config_.tie_word_embeddings) lm_head_ = embed_tokens_;
  else convert(lm_head_);
  weight_dtype_ = dtype;
  if (dtype == DType::F32 && !frozen_in_bf16_.empty()) {
    freeze(frozen_in_bf16_);
    frozen_in_bf16_.clear();
  }
}

void Transformer::interleave_rows() {
  auto interleave = [](Tensor& t) {
    const bool interleavable = t.defined() && (t.dtype() == DType::Q4_0 || t.dtype() == DType::Q8_0 || t.dtype() == DType::Q4_K);
    if (interleavable && t.dim() == 2 && t.size(0) % kX8Rows == 0) t = t.to(x8_of(t.dtype()));
  };
  interleave(embed_tokens_);
  for (Block& b : layers_)
    for (Linear* l : {&b.self_attn.q_proj, &b.self_attn.k_proj, &b.self_attn.v_proj, &b.self_attn.o_proj, &b.mlp.gate_proj,
                      &b.mlp.up_proj, &b.mlp.down_proj})
      interleave(l->weight);
  if (config_.tie_word_embeddings) lm_head_ = embed_tokens_;
  else interleave(lm_head_);
}

NamedTensors Transformer::trainable_parameters() const {
  NamedTensors out;
  for (const auto& [name, t] : named_parameters())
    if (t.requires_grad()) out.push_back({name, t});
  return out;
}

int64_t Transformer::freeze(const std::vector<std::string>& patterns) {
  int64_t frozen = 0;
  for (const std::string& pattern : patterns) {
    int64_t matched = 0;
    for (auto& [name, t] : named_parameters())
      if (fnmatch(pattern.c_str(), name.c_str(), 0) == 0) {
        Tensor p = t;
        if (p.requires_grad()) ++frozen;
        p.set_requires_grad(false);
        ++matched;
      }
    SMELT_CHECK(matched > 0, "freeze pattern '", pattern, "' matches no parameter (names look like ", named_parameters()[1].first, ")");
  }
  return frozen;
}

void Transformer::set_activation_checkpointing(bool on) {
  for (Block& b : layers_) b.checkpoint_activations = on;
}

void Transformer::set_capture(bool on) const {
  *capturing_ = on;
  if (!on) *capture_ = Capture();
}

void Transformer::set_routing_policy(const RoutingPolicy& policy) {
  set_routing_policies(std::vector<RoutingPolicy>(layers_.size(), policy));
}

void Transformer::set_routing_policies(const std::vector<RoutingPolicy>& per_layer) {
  SMELT_CHECK(per_layer.size() == layers_.size(), "routing policy lists ", per_layer.size(), " layers for a model with ",
              layers_.size());
  for (size_t i = 0; i < per_layer.size(); ++i) {
    if (!layers_[i].moe) continue;
    const RoutingPolicy& p = per_layer[i];
    const int64_t E = layers_[i].moe->num_experts();
    if (p.kind == RoutingPolicy::Kind::TopK)
      SMELT_CHECK(p.k >= 1 && p.k <= E, "layer ", i, ": top-k routing with k = ", p.k, " needs 1 ≤ k ≤ ", E);
    else
      SMELT_CHECK(p.p > 0 && p.p <= 1 && p.max_experts >= 0 && p.max_experts <= E, "layer ", i, ": top-p routing needs 0 < p ≤ 1 and a cap ≤ ",
                  E, ", got p = ", p.p, ", cap = ", p.max_experts);
  }
  policies_ = per_layer;
}

Tensor Transformer::auxiliary_loss() const {
  Tensor total;
  for (const Block& b : layers_) {
    if (!b.moe || !b.moe->auxiliary_loss().defined()) continue;
    total = total.defined() ? ops::add(total, b.moe->auxiliary_loss()) : b.moe->auxiliary_loss();
  }
  return total;
}

std::vector<Tensor> Transformer::moe_raw_stats() const {
  std::vector<Tensor> out;
  for (const Block& b : layers_)
    if (b.moe && b.moe->raw_stats().defined()) out.push_back(b.moe->raw_stats());
  return out;
}

void Transformer::set_moe_stats_from_raw(const std::vector<float>& values) const {
  size_t at = 0;
  for (const Block& b : layers_) {
    if (!b.moe || !b.moe->raw_stats().defined()) continue;
    const size_t n = static_cast<size_t>(b.moe->raw_stats().numel());
    SMELT_ASSERT(at + n <= values.size());
    b.moe->set_stats_from_raw(std::vector<float>(values.begin() + at, values.begin() + at + n));
    at += n;
  }
}

std::vector<std::pair<int64_t, MoEStats>> Transformer::moe_stats() const {
  bool unread = false;
  for (const Block& b : layers_) unread = unread || (b.moe && !b.moe->stats_read());
  if (unread) set_moe_stats_from_raw(ops::cat(moe_raw_stats(), 0).to_vector());  // every layer in one host read
  std::vector<std::pair<int64_t, MoEStats>> out;
  for (size_t i = 0; i < layers_.size(); ++i)
    if (layers_[i].moe) out.push_back({static_cast<int64_t>(i), layers_[i].moe->stats()});
  return out;
}

double Transformer::mean_active_parameters() const {
  double total = static_cast<double>(config_.parameter_count());
  const double expert = 3.0 * config_.hidden_size * config_.expert_size();
  for (const Block& b : layers_)
    if (b.moe) total -= (b.moe->num_experts() - b.moe->stats().mean_active_experts) * expert;
  return total;
}

std::vector<Tensor> Transformer::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

}  // namespace smelt
