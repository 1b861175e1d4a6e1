#include "io/gguf_model.h"

#include <cstring>
#include <map>

#include "io/pretokenize.h"
#include "ops/shape.h"

namespace smelt {
namespace {

// llama.cpp's token types (llama_token_type): which GGUF tokens are literal added tokens.
constexpr int64_t kTokenNormal = 1, kTokenControl = 3, kTokenUserDefined = 4;

std::string layer_prefix(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

// HF name of a per-layer GGUF tensor ("attn_q" → "self_attn.q_proj"; ".weight" or ".bias" follows),
// for llama.cpp's llama (Mixtral-style experts under block_sparse_moe.) or qwen2moe (mlp.);
// empty if unknown. Stacked experts are handled by expert_matrix.
std::string hf_layer_tensor(const std::string& what, bool qwen_moe) {
  static const std::map<std::string, std::string> names = {
      {"attn_norm", "input_layernorm"},   {"attn_q", "self_attn.q_proj"},
      {"attn_k", "self_attn.k_proj"},     {"attn_v", "self_attn.v_proj"},
      {"attn_output", "self_attn.o_proj"}, {"ffn_norm", "post_attention_layernorm"},
      {"ffn_gate", "mlp.gate_proj"},      {"ffn_up", "mlp.up_proj"},
      {"ffn_down", "mlp.down_proj"},
      {"ffn_gate_shexp", "mlp.shared_expert.gate_proj"}, {"ffn_up_shexp", "mlp.shared_expert.up_proj"},
      {"ffn_down_shexp", "mlp.shared_expert.down_proj"}, {"ffn_gate_inp_shexp", "mlp.shared_expert_gate"},
  };
  if (what == "ffn_gate_inp") return qwen_moe ? "mlp.gate" : "block_sparse_moe.gate";
  auto it = names.find(what);
  return it == names.end() ? "" : it->second;
}

// The per-expert HF name ("w1" for Mixtral, "gate_proj" for Qwen2-MoE) of a stacked GGUF expert tensor.
const char* expert_matrix(const std::string& what, bool qwen_moe) {
  if (what == "ffn_gate_exps") return qwen_moe ? "gate_proj" : "w1";
  if (what == "ffn_up_exps") return qwen_moe ? "up_proj" : "w3";
  if (what == "ffn_down_exps") return qwen_moe ? "down_proj" : "w2";
  return nullptr;
}

// "blk.12.attn_q.bias" → (12, "attn_q", "bias"); false when the name is not of that form.
bool split_layer_name(const std::string& name, int64_t& layer, std::string& what, std::string& kind) {
  if (name.rfind("blk.", 0) != 0) return false;
  const size_t dot = name.find('.', 4), last = name.rfind('.');
  if (dot == std::string::npos || last <= dot) return false;
  kind = name.substr(last + 1);
  if (kind != "weight" && kind != "bias") return false;
  const std::string number = name.substr(4, dot - 4);
  if (number.empty() || number.size() > 6 || number.find_first_not_of("0123456789") != std::string::npos) return false;
  layer = std::stoll(number);
  what = name.substr(dot + 1, last - dot - 1);
  return true;
}

Tensor reorder_rope_rows(const Tensor& w, int64_t heads, bool to_hf) {
  const int64_t rows = w.size(0);
  SMELT_CHECK(rows % (2 * heads) == 0, "Q/K rows ", rows, " are not whole rotary pairs of ", heads, " heads");
  const int64_t half = rows / heads / 2;
  const Tensor src = w.is_contiguous() ? w : w.clone();
  Tensor out = Tensor::empty(w.shape(), w.dtype());
  // Whole rows move, so this works on bytes: f32 and block-quantised rows alike.
  const size_t row_bytes = dtype_bytes(w.dtype(), w.size(1));
  const auto* s = static_cast<const uint8_t*>(src.device_data());
  auto* d = static_cast<uint8_t*>(out.device_data());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t pair = 0; pair < 2; ++pair)
      for (int64_t j = 0; j < half; ++j) {
        const int64_t hf_row = h * 2 * half + pair * half + j;  // HF: halves one after the other
        const int64_t gg_row = h * 2 * half + 2 * j + pair;     // llama.cpp: pairs interleaved
        const int64_t from = to_hf ? gg_row : hf_row, to = to_hf ? hf_row : gg_row;
        std::memcpy(d + to * row_bytes, s + from * row_bytes, row_bytes);
      }
  return out;
}

// Expert e of a stacked [E, rows, cols] tensor, as its own [rows, cols] tensor (bytes copied, so
// this works for block-quantised stacks too).
Tensor expert_slice(const Tensor& all, int64_t e) {
  Tensor out = Tensor::empty({all.size(1), all.size(2)}, all.dtype());
  const size_t bytes = dtype_bytes(all.dtype(), all.size(1) * all.size(2));
  std::memcpy(out.device_data(), static_cast<const uint8_t*>(all.device_data()) + e * bytes, bytes);
  return out;
}

}  // namespace

Tensor unpermute_rope_rows(const Tensor& w, int64_t heads) { return reorder_rope_rows(w, heads, true); }
Tensor permute_rope_rows(const Tensor& w, int64_t heads) { return reorder_rope_rows(w, heads, false); }

ModelConfig gguf_model_config(const GgufFile& f) {
  const std::string arch = f.string("general.architecture");
  SMELT_CHECK(arch == "llama" || arch == "qwen2" || arch == "qwen2moe", f.source, ": key 'general.architecture': \"", arch,
              "\" is not supported (smelt imports llama, including Mixtral-style experts, qwen2 and qwen2moe)");
  const std::string k = arch + ".";
  ModelConfig c;
  c.num_hidden_layers = f.integer(k + "block_count");
  c.hidden_size = f.integer(k + "embedding_length");
  c.intermediate_size = f.integer(k + "feed_forward_length");
  c.num_attention_heads = f.integer(k + "attention.head_count");
  c.num_key_value_heads = f.integer(k + "attention.head_count_kv", c.num_attention_heads);
  c.max_position_embeddings = f.integer(k + "context_length", c.max_position_embeddings);
  c.rope_theta = f.number(k + "rope.freq_base", 10000.0);
  c.rms_norm_eps = f.number(k + "attention.layer_norm_rms_epsilon", 1e-5);
  SMELT_CHECK(c.num_attention_heads > 0 && c.hidden_size % c.num_attention_heads == 0, f.source, ": key '", k,
              "attention.head_count': ", c.num_attention_heads, " heads do not divide the width ", c.hidden_size);
  const int64_t head_dim = c.hidden_size / c.num_attention_heads;
  for (const char* key : {"rope.dimension_count", "attention.key_length", "attention.value_length"})
    SMELT_CHECK(f.integer(k + key, head_dim) == head_dim, f.source, ": key '", k, key, "': ", f.integer(k + key),
                " (smelt needs rotary embeddings over the whole head of ", head_dim, ")");
  const std::string scaling = f.string(k + "rope.scaling.type", "none");
  SMELT_CHECK(scaling == "none" || scaling == "linear", f.source, ": key '", k, "rope.scaling.type': \"", scaling,
              "\" is not supported (none or linear)");
  if (scaling == "linear") c.rope_scaling_factor = f.number(k + "rope.scaling.factor");
  SMELT_CHECK(!f.find_tensor("rope_freqs.weight"), f.source, ": tensor 'rope_freqs.weight': per-frequency RoPE factors (Llama 3.1 scaling) are not supported");
  const GgufTensorInfo& embed = f.tensor("token_embd.weight");
  c.vocab_size = f.integer(k + "vocab_size", embed.dims.size() == 2 ? embed.dims[1] : 0);
  c.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
  // Qwen2's q, k and v always have biases; a llama file may carry them too.
  c.qkv_bias = arch != "llama" || f.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.num_local_experts = f.integer(k + "expert_count", 0);
  SMELT_CHECK(arch != "qwen2moe" || c.num_local_experts > 0, f.source, ": key '", k, "expert_count': a qwen2moe model needs experts");
  if (c.num_local_experts > 0) {
    c.num_experts_per_tok = f.integer(k + "expert_used_count");
    c.moe_intermediate_size = f.integer(k + "expert_feed_forward_length", 0);
    // Mixtral renormalises the chosen experts' weights; llama.cpp's qwen2moe does not, and
    // always adds a shared expert scaled by sigmoid(ffn_gate_inp_shexp · x).
    c.norm_topk_prob = arch == "llama";
    if (arch == "qwen2moe") {
      c.shared_expert_intermediate_size = f.integer(k + "expert_shared_feed_forward_length", c.intermediate_size);
      c.shared_expert_gate = true;
    }
  }
  try {
    c.validate();
  } catch (const Error& e) {
    SMELT_FAIL(f.source, ": the metadata gives an invalid model: ", e.message());
  }
  return c;
}

GgufModel read_gguf_model(const GgufFile& f, DType keep) {
  GgufModel m;
  m.config = gguf_model_config(f);
  const ModelConfig& c = m.config;
  const std::string arch = f.string("general.architecture");
  for (const GgufTensorInfo& t : f.tensors) {
    const std::string where = f.source + ": tensor '" + t.name + "'";
    if (t.name == "token_embd.weight") {
      m.tensors.push_back({"model.embed_tokens.weight", f.read(t, keep)});
      continue;
    }
    if (t.name == "output_norm.weight" || t.name == "output.weight") {
      m.tensors.push_back({t.name == "output.weight" ? "lm_head.weight" : "model.norm.weight", f.read(t, keep)});
      continue;
    }
    int64_t layer = 0;
    std::string what, kind;
    SMELT_CHECK(split_layer_name(t.name, layer, what, kind), where, ": not a tensor of a ", arch, " model");
    SMELT_CHECK(layer < c.num_hidden_layers, where, ": layer ", layer, " but the model has ", c.num_hidden_layers);
    const bool qwen_moe = arch == "qwen2moe";
    if (const char* matrix = expert_matrix(what, qwen_moe); matrix && kind == "weight") {
      const Tensor all = f.read(t, keep);  // [E, rows, cols]
      SMELT_CHECK(all.dim() == 3 && all.size(0) == c.num_local_experts, where, ": expected [", c.num_local_experts,
                  " experts, rows, cols], got ", shape_str(all.shape()));
      const std::string experts = layer_prefix(layer) + (qwen_moe ? "mlp" : "block_sparse_moe") + ".experts.";
      for (int64_t e = 0; e < all.size(0); ++e)
        m.tensors.push_back({experts + std::to_string(e) + "." + matrix + ".weight", expert_slice(all, e)});
      continue;
    }
    const std::string hf = hf_layer_tensor(what, qwen_moe);
    const bool qkv = what == "attn_q" || what == "attn_k" || what == "attn_v";
    SMELT_CHECK(!hf.empty() && (kind == "weight" || qkv), where, ": '", what, ".", kind, "' is not a tensor smelt's ", arch,
                " computes with (only q, k and v have biases; extra norms are not supported)");
    Tensor w = f.read(t, kind == "bias" ? DType::F32 : keep);
    if (what == "ffn_gate_inp_shexp") w = ops::reshape(w, {1, c.hidden_size});  // llama.cpp keeps the [1, C] row as a vector
    // llama.cpp's converter interleaves the rotary halves of llama's Q and K rows (not qwen2's),
    // and of their biases' entries.
    if (arch == "llama" && (what == "attn_q" || what == "attn_k")) {
      const int64_t heads = what == "attn_q" ? c.num_attention_heads : c.num_key_value_heads;
      w = kind == "bias" ? ops::reshape(unpermute_rope_rows(ops::reshape(w, {w.size(0), 1}), heads), {w.size(0)}) : unpermute_rope_rows(w, heads);
    }
    m.tensors.push_back({layer_prefix(layer) + hf + "." + kind, w});
  }
  return m;
}

std::optional<json> gguf_tokenizer_json(const GgufFile& f) {
  if (!f.has("tokenizer.ggml.model")) return std::nullopt;
  const std::string model = f.string("tokenizer.ggml.model");
  SMELT_CHECK(model == "gpt2", f.source, ": key 'tokenizer.ggml.model': \"", model,
              "\" is not supported (smelt reads byte-level BPE tokenizers, \"gpt2\")");
  const std::string pre_name = f.string("tokenizer.ggml.pre", "default");
  PreTokenizer pre;
  bool ignore_merges = false;
  if (pre_name == "smollm") {
    pre = PreTokenizer::SmolLM;
  } else if (pre_name == "gpt-2" || pre_name == "gpt2" || pre_name == "default") {
    pre = PreTokenizer::Gpt2;
  } else if (pre_name == "llama-bpe" || pre_name == "llama3") {
    pre = PreTokenizer::Llama3;
    ignore_merges = true;  // Llama-3's tokenizer.json sets it
  } else if (pre_name == "qwen2") {
    pre = PreTokenizer::Qwen2;
  } else {
    SMELT_FAIL(f.source, ": key 'tokenizer.ggml.pre': \"", pre_name, "\" is not supported (smollm, gpt-2, llama-bpe, qwen2)");
  }
  const std::vector<std::string> tokens = f.strings("tokenizer.ggml.tokens");
  const std::vector<int64_t> types =
      f.has("tokenizer.ggml.token_type") ? f.integers("tokenizer.ggml.token_type") : std::vector<int64_t>(tokens.size(), kTokenNormal);
  SMELT_CHECK(types.size() == tokens.size(), f.source, ": key 'tokenizer.ggml.token_type': ", types.size(), " entries for ",
              tokens.size(), " tokens");
  // nlohmann::json (a std::map), not ordered_json: its linear lookups would make 50K inserts quadratic.
  json added = json::array(), vocab = json::object();
  for (size_t id = 0; id < tokens.size(); ++id) {
    if (types[id] == kTokenControl || types[id] == kTokenUserDefined) {
      added.push_back({{"id", id}, {"content", tokens[id]}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                       {"normalized", false}, {"special", true}});
    }
    SMELT_CHECK(vocab.emplace(tokens[id], id).second, f.source, ": key 'tokenizer.ggml.tokens': token ", id, " (\"", tokens[id],
                "\") appears twice");
  }
  json merges = json::array();
  if (f.has("tokenizer.ggml.merges"))
    for (const std::string& m : f.strings("tokenizer.ggml.merges")) merges.push_back(m);
  json j = BpeTokenizer().to_json();
  j["added_tokens"] = added;
  j["model"]["vocab"] = vocab;
  j["model"]["merges"] = merges;
  j["model"]["ignore_merges"] = ignore_merges;
  j["pre_tokenizer"] = pre_tokenizer_json(pre, false);
  return j;
}

std::string gguf_tokenizer_config_json(const GgufFile& f) {
  nlohmann::ordered_json j = {{"tokenizer_class", "PreTrainedTokenizerFast"}};
  const std::vector<std::string> tokens = f.has("tokenizer.ggml.tokens") ? f.strings("tokenizer.ggml.tokens") : std::vector<std::string>{};
  for (const char* role : {"bos", "eos", "pad", "unknown"}) {
    const std::string key = std::string("tokenizer.ggml.") + role + "_token_id";
    if (!f.has(key)) continue;
    const int64_t id = f.integer(key);
    SMELT_CHECK(id >= 0 && id < static_cast<int64_t>(tokens.size()), f.source, ": key '", key, "': ", id, " is not a token id");
    j[std::string(role == std::string("unknown") ? "unk" : role) + "_token"] = tokens[id];
  }
  if (f.has("tokenizer.chat_template")) j["chat_template"] = f.string("tokenizer.chat_template");
  return j.dump(2) + "\n";
}

}  // namespace smelt
