#include "io/gguf_export.h"

#include <filesystem>
#include <optional>
#include <tuple>

#include "io/checkpoint.h"
#include "io/files.h"
#include "io/gguf.h"
#include "io/gguf_model.h"
#include "io/hf_export.h"
#include "ops/shape.h"
#include "runtime/quant.h"

namespace smelt {
namespace {

using Metadata = std::vector<std::pair<std::string, GgufValue>>;

// llama.cpp's name for each pre-tokenizer (tokenizer.ggml.pre).
const char* gguf_pre_name(PreTokenizer kind) {
  switch (kind) {
    case PreTokenizer::Gpt2: return "gpt-2";
    case PreTokenizer::SmolLM: return "smollm";
    case PreTokenizer::Llama3: return "llama-bpe";
    case PreTokenizer::Qwen2: return "qwen2";
  }
  return "gpt-2";
}

// llama.cpp's architecture for a model: qwen2moe for a shared expert (Qwen2-MoE), qwen2 for a
// dense model with q, k and v biases, llama otherwise (Mixtral-style experts included).
std::string gguf_architecture(const ModelConfig& c) {
  if (c.shared_expert_intermediate_size > 0) return "qwen2moe";
  return c.qkv_bias ? "qwen2" : "llama";
}

void add_model_metadata(const ModelConfig& c, const std::string& name, GgmlType type, Metadata& m) {
  auto u32 = [](int64_t v) { return GgufValue::of_u32(static_cast<uint32_t>(v)); };
  const std::string arch = gguf_architecture(c), k = arch + ".";
  m.push_back({"general.architecture", GgufValue::of_string(arch)});
  m.push_back({"general.name", GgufValue::of_string(name)});
  m.push_back({"general.file_type", u32(type == GgmlType::F32 ? 0 : type == GgmlType::F16 ? 1 : type == GgmlType::Q4_0 ? 2
                                                                : type == GgmlType::Q8_0 ? 7 : type == GgmlType::Q4_K ? 14 : 32)});  // llama_ftype (14: Q4_K_S)
  m.push_back({"general.quantization_version", u32(2)});
  m.push_back({k + "block_count", u32(c.num_hidden_layers)});
  m.push_back({k + "context_length", u32(c.max_position_embeddings)});
  m.push_back({k + "embedding_length", u32(c.hidden_size)});
  const bool mixtral = c.num_local_experts > 0 && arch == "llama";  // llama.cpp reads the experts' width here
  m.push_back({k + "feed_forward_length", u32(mixtral ? c.expert_size() : c.intermediate_size)});
  m.push_back({k + "attention.head_count", u32(c.num_attention_heads)});
  m.push_back({k + "attention.head_count_kv", u32(c.num_key_value_heads)});
  m.push_back({k + "rope.freq_base", GgufValue::of_f32(static_cast<float>(c.rope_theta))});
  m.push_back({k + "attention.layer_norm_rms_epsilon", GgufValue::of_f32(static_cast<float>(c.rms_norm_eps))});
  m.push_back({k + "rope.dimension_count", u32(c.head_dim())});
  m.push_back({k + "vocab_size", u32(c.vocab_size)});
  if (c.rope_scaling_factor != 1.0) {
    m.push_back({k + "rope.scaling.type", GgufValue::of_string("linear")});
    m.push_back({k + "rope.scaling.factor", GgufValue::of_f32(static_cast<float>(c.rope_scaling_factor))});
  }
  if (c.num_local_experts > 0) {
    m.push_back({k + "expert_count", u32(c.num_local_experts)});
    m.push_back({k + "expert_used_count", u32(c.num_experts_per_tok)});
  }
  if (arch == "qwen2moe") {
    m.push_back({k + "expert_feed_forward_length", u32(c.expert_size())});
    m.push_back({k + "expert_shared_feed_forward_length", u32(c.shared_expert_intermediate_size)});
  }
}

// The id of the token spelled `content`, if any.
std::optional<int64_t> token_id(const BpeTokenizer& t, const std::string& content) {
  if (content.empty() || !t.has_special(content)) return std::nullopt;
  return t.special_id(content);
}

// A special token's name in tokenizer_config.json ("eos_token": "<|im_end|>" or {"content": ...}).
std::string config_token(const json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return "";
  const json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

// tokenizer.ggml.*: the model's tokenizer, or for a byte-level model 256 tokens whose ids are
// the bytes. The list is padded to the model's vocabulary with unused tokens (llama.cpp needs
// one token per embedding row).
void add_tokenizer_metadata(const std::optional<BpeTokenizer>& tokenizer, const json& tokenizer_config, int64_t vocab_size,
                            const std::string& source, Metadata& m) {
  constexpr int32_t kNormal = 1, kControl = 3, kUnused = 5;
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<std::string> merges;
  if (tokenizer) {
    for (int32_t id = 0; id < tokenizer->vocab_size(); ++id) {
      const bool special = tokenizer->is_special(id);
      tokens.push_back(special ? tokenizer->token_bytes(id) : bytes_to_vocab_string(tokenizer->token_bytes(id)));
      types.push_back(special ? kControl : kNormal);
    }
    for (const auto& [a, b] : tokenizer->merge_pairs())
      merges.push_back(bytes_to_vocab_string(tokenizer->token_bytes(a)) + " " + bytes_to_vocab_string(tokenizer->token_bytes(b)));
  } else {  // byte-level: token id = byte (a model with fewer than 256 rows gets the first ones)
    for (int b = 0; b < std::min<int64_t>(256, vocab_size); ++b) {
      tokens.push_back(bytes_to_vocab_string(std::string(1, static_cast<char>(b))));
      types.push_back(kNormal);
    }
  }
  SMELT_CHECK(static_cast<int64_t>(tokens.size()) <= vocab_size, source, ": the tokenizer has ", tokens.size(),
              " tokens but the model only ", vocab_size, " embedding rows");
  for (int64_t id = static_cast<int64_t>(tokens.size()); id < vocab_size; ++id) {
    tokens.push_back("<|smelt_unused_" + std::to_string(id) + "|>");
    types.push_back(kUnused);
  }
  m.push_back({"tokenizer.ggml.model", GgufValue::of_string("gpt2")});
  m.push_back({"tokenizer.ggml.pre", GgufValue::of_string(gguf_pre_name(tokenizer ? tokenizer->pre_tokenizer() : PreTokenizer::Gpt2))});
  m.push_back({"tokenizer.ggml.tokens", GgufValue::of_strings(tokens)});
  m.push_back({"tokenizer.ggml.token_type", GgufValue::of_i32s(types)});
  m.push_back({"tokenizer.ggml.merges", GgufValue::of_strings(merges)});
  if (tokenizer) {
    const std::pair<const char*, std::vector<std::string>> roles[] = {
        {"bos", {config_token(tokenizer_config, "bos_token"), "<|bos|>"}},
        {"eos", {config_token(tokenizer_config, "eos_token"), "<|eos|>", "<|endoftext|>"}},
        {"padding", {config_token(tokenizer_config, "pad_token"), "<|pad|>"}}};
    for (const auto& [role, candidates] : roles)
      for (const std::string& name : candidates)
        if (const auto id = token_id(*tokenizer, name)) {
          m.push_back({std::string("tokenizer.ggml.") + role + "_token_id", GgufValue::of_u32(static_cast<uint32_t>(*id))});
          break;
        }
  }
  m.push_back({"tokenizer.ggml.add_bos_token", GgufValue::of_bool(false)});  // smelt never prepends one
  if (tokenizer_config.is_object() && tokenizer_config.contains("chat_template") && tokenizer_config["chat_template"].is_string())
    m.push_back({"tokenizer.chat_template", GgufValue::of_string(tokenizer_config["chat_template"].get<std::string>())});
}

// Each weight as llama.cpp names it, f32, with its storage type.
std::vector<GgufTensorToWrite> model_tensors(const Transformer& model, GgmlType matrix_type) {
  const ModelConfig& c = model.config();
  auto f32 = [](const Tensor& t) { return ops::contiguous(t.to(DType::F32)); };
  // Matrices take the chosen type where their rows are whole blocks; everything else stays F32.
  auto matrix = [&](const std::string& name, const Tensor& t) {
    const GgmlTypeInfo* info = ggml_type_info(static_cast<uint32_t>(matrix_type));
    const int64_t cols = t.shape().back();
    // Q4_K rows that are not whole super-blocks take Q4_0, as smelt keeps them in memory
    // (Transformer::store_weights_in); rows that are not whole blocks stay F32.
    if (matrix_type == GgmlType::Q4_K && cols % info->block_values != 0 && cols % kQuantBlock == 0)
      return GgufTensorToWrite{name, t, GgmlType::Q4_0};
    return GgufTensorToWrite{name, t, cols % info->block_values == 0 ? matrix_type : GgmlType::F32};
  };
  std::map<std::string, Tensor> hf;
  for (const auto& [name, t] : model.state_dict()) hf[name] = f32(t);
  const std::string arch = gguf_architecture(c);
  // llama.cpp's llama kernels rotate interleaved pairs: its converter permutes Q and K rows to
  // match (qwen2's NeoX-style rotation takes HF's order as it is).
  auto rope_rows = [&](const Tensor& w, int64_t heads) { return arch == "llama" ? permute_rope_rows(w, heads) : w; };
  std::vector<GgufTensorToWrite> out = {matrix("token_embd.weight", hf.at("model.embed_tokens.weight"))};
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".", b = "blk." + std::to_string(i) + ".";
    out.push_back({b + "attn_norm.weight", hf.at(p + "input_layernorm.weight"), GgmlType::F32});
    out.push_back(matrix(b + "attn_q.weight", rope_rows(hf.at(p + "self_attn.q_proj.weight"), c.num_attention_heads)));
    out.push_back(matrix(b + "attn_k.weight", rope_rows(hf.at(p + "self_attn.k_proj.weight"), c.num_key_value_heads)));
    out.push_back(matrix(b + "attn_v.weight", hf.at(p + "self_attn.v_proj.weight")));
    if (arch != "llama") {  // qwen2's biases (zero for a Qwen2-MoE made without them: llama.cpp expects them)
      const int64_t kv = c.num_key_value_heads * c.head_dim();
      for (const auto& [name, rows] : {std::pair{"q", c.hidden_size}, {"k", kv}, {"v", kv}}) {
        const std::string key = p + "self_attn." + name + "_proj.bias";
        out.push_back({b + "attn_" + name + ".bias", c.qkv_bias ? hf.at(key) : Tensor::zeros({rows}), GgmlType::F32});
      }
    }
    out.push_back(matrix(b + "attn_output.weight", hf.at(p + "self_attn.o_proj.weight")));
    out.push_back({b + "ffn_norm.weight", hf.at(p + "post_attention_layernorm.weight"), GgmlType::F32});
    if (!c.is_moe_layer(i)) {
      out.push_back(matrix(b + "ffn_gate.weight", hf.at(p + "mlp.gate_proj.weight")));
      out.push_back(matrix(b + "ffn_up.weight", hf.at(p + "mlp.up_proj.weight")));
      out.push_back(matrix(b + "ffn_down.weight", hf.at(p + "mlp.down_proj.weight")));
      continue;
    }
    const bool qwen = arch == "qwen2moe";
    const std::string moe = p + (qwen ? "mlp." : "block_sparse_moe.");
    out.push_back({b + "ffn_gate_inp.weight", hf.at(moe + "gate.weight"), GgmlType::F32});
    for (const auto& [gguf_name, mixtral_name, qwen_name] :
         {std::tuple{"ffn_gate_exps", "w1", "gate_proj"}, {"ffn_up_exps", "w3", "up_proj"}, {"ffn_down_exps", "w2", "down_proj"}}) {
      std::vector<Tensor> experts;
      for (int64_t e = 0; e < c.num_local_experts; ++e)
        experts.push_back(ops::unsqueeze(hf.at(moe + "experts." + std::to_string(e) + "." + (qwen ? qwen_name : mixtral_name) + ".weight"), 0));
      out.push_back(matrix(b + gguf_name + ".weight", ops::cat(experts, 0)));
    }
    if (!qwen) continue;
    for (const auto& [gguf_name, which] : {std::pair{"ffn_gate_shexp", "gate"}, {"ffn_up_shexp", "up"}, {"ffn_down_shexp", "down"}})
      out.push_back(matrix(b + gguf_name + ".weight", hf.at(moe + "shared_expert." + which + "_proj.weight")));
    out.push_back({b + "ffn_gate_inp_shexp.weight", ops::reshape(hf.at(moe + "shared_expert_gate.weight"), {c.hidden_size}), GgmlType::F32});
  }
  out.push_back({"output_norm.weight", hf.at("model.norm.weight"), GgmlType::F32});
  if (!c.tie_word_embeddings) out.push_back(matrix("output.weight", hf.at("lm_head.weight")));
  return out;
}

}  // namespace

void export_gguf(const std::string& model_dir, const std::string& out, GgmlType matrix_type) {
  SMELT_CHECK(matrix_type == GgmlType::F32 || matrix_type == GgmlType::F16 || matrix_type == GgmlType::BF16 ||
                  matrix_type == GgmlType::Q8_0 || matrix_type == GgmlType::Q4_0 || matrix_type == GgmlType::Q4_K,
              "--type: smelt writes f32, f16, bf16, q8_0, q4_0 or q4_k");
  const Transformer model = load_model_dir(model_dir);
  check_hf_exportable(model, model_dir);  // Mixtral's and Qwen2-MoE's constraints are llama.cpp's too
  const ModelConfig& c = model.config();
  if (gguf_architecture(c) == "qwen2moe") {
    SMELT_CHECK(!c.norm_topk_prob, model_dir, ": norm_topk_prob true: llama.cpp's qwen2moe never renormalises the chosen experts' weights");
    SMELT_CHECK(c.decoder_sparse_step == 1, model_dir, ": decoder_sparse_step ", c.decoder_sparse_step, ": llama.cpp's qwen2moe has experts in every layer");
  }
  std::optional<BpeTokenizer> tokenizer;
  json tokenizer_config;
  const bool gguf_in = std::filesystem::is_regular_file(model_dir) && is_gguf_file(model_dir);
  if (gguf_in) {
    const GgufFile f = read_gguf(model_dir);
    if (const auto j = gguf_tokenizer_json(f)) tokenizer = BpeTokenizer::from_json(*j, model_dir);
    tokenizer_config = json::parse(gguf_tokenizer_config_json(f));
  } else {
    if (std::filesystem::exists(model_dir + "/tokenizer.json")) tokenizer = BpeTokenizer::from_file(model_dir + "/tokenizer.json");
    if (std::filesystem::exists(model_dir + "/tokenizer_config.json")) tokenizer_config = read_json_file(model_dir + "/tokenizer_config.json");
  }
  Metadata metadata;
  add_model_metadata(model.config(), std::filesystem::path(model_dir).filename().string(), matrix_type, metadata);
  add_tokenizer_metadata(tokenizer, tokenizer_config, model.config().vocab_size, model_dir, metadata);
  write_gguf(out, metadata, model_tensors(model, matrix_type));
}

}  // namespace smelt
