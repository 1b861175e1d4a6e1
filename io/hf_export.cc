#include "io/hf_export.h"

#include <filesystem>

#include "io/checkpoint.h"
#include "io/config_json.h"
#include "io/files.h"
#include "io/safetensors.h"

namespace smelt {

void check_hf_exportable(const Transformer& model, const std::string& source) {
  const ModelConfig& c = model.config();
  if (c.num_local_experts == 0) return;  // LlamaForCausalLM, or Qwen2ForCausalLM with q, k, v biases
  const bool qwen = c.shared_expert_intermediate_size > 0;
  const char* arch = qwen ? "Qwen2MoeForCausalLM" : "MixtralForCausalLM";
  auto refuse = [&](const std::string& what) { SMELT_FAIL(source, ": ", what, " has no equivalent in ", arch, "; cannot export to Hugging Face"); };
  if (c.scoring_func != "softmax") refuse("scoring_func \"" + c.scoring_func + "\"");
  if (c.routing != "token_choice") refuse("routing \"" + c.routing + "\"");
  if (c.capacity_factor > 0) refuse("capacity_factor (token dropping)");
  if (!c.routing_policies.empty()) refuse("a per-layer routing policy (routing_policies)");
  if (c.routed_scaling_factor != 1.0) refuse("routed_scaling_factor " + std::to_string(c.routed_scaling_factor));
  if (c.routed_weights != "scores") refuse("routed_weights \"" + c.routed_weights + "\" (outputs summed unweighted)");
  if (!qwen && c.qkv_bias) refuse("q, k and v biases (compose or upcycle with a shared expert for Qwen2-MoE, which has them)");
  if (!qwen && !c.norm_topk_prob) refuse("norm_topk_prob false (Mixtral always renormalises the top-k weights)");
  if (!qwen && c.decoder_sparse_step != 1) refuse("decoder_sparse_step " + std::to_string(c.decoder_sparse_step) + " (Mixtral has experts in every layer)");
  if (qwen && !c.shared_expert_gate) refuse("a shared expert without shared_expert_gate");
  for (size_t i = 0; i < model.num_layers(); ++i) {
    const auto& moe = model.layer(i).moe;
    if (!moe || !moe->score_bias.defined()) continue;
    for (float b : moe->score_bias.to_vector())
      if (b != 0.0f) refuse("the aux-free balancing bias of layer " + std::to_string(i) + " (it changes which experts are chosen)");
  }
}

json hf_config_json(const ModelConfig& c, const std::optional<BpeTokenizer>& tokenizer) {
  // smelt's own config.json is already in HF form (io/config_json.cc); drop what only smelt
  // reads, and add what transformers expects.
  json j = model_config_to_json(c);
  for (const char* smelt_only : {"qkv_bias", "scoring_func", "router_z_loss_coef", "moe_balancing", "aux_free_update_rate", "capacity_factor",
                                 "routing", "shared_expert_gate", "decoder_sparse_step", "norm_topk_prob", "moe_intermediate_size",
                                 "num_local_experts", "num_experts", "router_jitter_noise", "shared_expert_intermediate_size"})
    j.erase(smelt_only);
  j["head_dim"] = c.hidden_size / c.num_attention_heads;
  j["attention_dropout"] = 0.0;
  j["use_cache"] = true;
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", c.rope_theta}};
  if (c.rope_scaling_factor != 1.0) {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_scaling_factor}};
    j["rope_parameters"] = {{"rope_type", "linear"}, {"rope_theta", c.rope_theta}, {"factor", c.rope_scaling_factor}};
  }
  if (tokenizer) {
    for (const auto& [field, name] : {std::pair{"bos_token_id", "<|bos|>"}, {"eos_token_id", "<|eos|>"}, {"pad_token_id", "<|pad|>"}})
      if (tokenizer->has_special(name)) j[field] = tokenizer->special_id(name);
  }
  if (c.num_local_experts == 0) {
    if (c.qkv_bias) {  // Qwen2: biases are not switchable
      j["use_sliding_window"] = false;
      j["layer_types"] = std::vector<std::string>(static_cast<size_t>(c.num_hidden_layers), "full_attention");
    } else {
      j["attention_bias"] = false;
      j["mlp_bias"] = false;
    }
    return j;
  }
  j["num_experts_per_tok"] = c.num_experts_per_tok;
  j["router_aux_loss_coef"] = c.router_aux_loss_coef;
  j["output_router_logits"] = false;
  if (c.shared_expert_intermediate_size == 0) {  // Mixtral: intermediate_size is the experts' width
    j["num_local_experts"] = c.num_local_experts;
    j["intermediate_size"] = c.expert_size();
    j["router_jitter_noise"] = c.router_jitter_noise;
    j["sliding_window"] = nullptr;
  } else {
    j["num_experts"] = c.num_local_experts;
    j["moe_intermediate_size"] = c.expert_size();
    j["shared_expert_intermediate_size"] = c.shared_expert_intermediate_size;
    j["norm_topk_prob"] = c.norm_topk_prob;
    j["decoder_sparse_step"] = c.decoder_sparse_step;
    j["mlp_only_layers"] = json::array();
    j["qkv_bias"] = c.qkv_bias;
    j["use_sliding_window"] = false;
    j["layer_types"] = std::vector<std::string>(static_cast<size_t>(c.num_hidden_layers), "full_attention");
  }
  return j;
}

void export_hf(const std::string& model_dir, const std::string& out) {
  const Transformer model = load_model_dir(model_dir);
  check_hf_exportable(model, model_dir);
  std::optional<BpeTokenizer> tokenizer;
  if (std::filesystem::exists(model_dir + "/tokenizer.json")) tokenizer = BpeTokenizer::from_file(model_dir + "/tokenizer.json");
  NamedTensors tensors;
  for (const auto& [name, t] : model.state_dict()) {
    if (name.find("e_score_correction_bias") != std::string::npos) continue;  // zero (checked): not an HF tensor
    if (model.config().tie_word_embeddings && name == "lm_head.weight") continue;
    tensors.push_back({name, t});
  }
  write_dir_atomic(out, [&](const std::string& tmp) {
    write_safetensors(tmp + "/model.safetensors", tensors, {{"format", "pt"}});
    write_file_atomic(tmp + "/config.json", hf_config_json(model.config(), tokenizer).dump(2) + "\n");
    for (const char* name : {"tokenizer.json", "tokenizer_config.json"})
      if (std::filesystem::exists(model_dir + "/" + name)) write_file_atomic(tmp + "/" + name, read_file(model_dir + "/" + name));
  });
}

}  // namespace smelt
