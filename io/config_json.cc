#include "io/config_json.h"

#include "io/files.h"

namespace smelt {

namespace {
// Rethrows a config validation error with the file name in front.
template <typename F>
void validated(const std::string& file, F&& validate) {
  try {
    validate();
  } catch (const Error& e) {
    SMELT_FAIL(file, ": ", e.message());
  }
}
}  // namespace

ModelConfig model_config_from_json(JsonReader& r) {
  ModelConfig c;
  if (r.has("architectures")) {
    const json& a = r.raw("architectures");
    const bool known = a.is_array() && a.size() == 1 &&
                       (a[0] == "LlamaForCausalLM" || a[0] == "MixtralForCausalLM" || a[0] == "Qwen2ForCausalLM" || a[0] == "Qwen2MoeForCausalLM");
    SMELT_CHECK(known, r.where("architectures"), ": unsupported architecture ", a.dump(),
                " (known: LlamaForCausalLM, MixtralForCausalLM, Qwen2ForCausalLM, Qwen2MoeForCausalLM)");
  }
  if (r.has("model_type")) {
    const std::string t = r.string("model_type");
    SMELT_CHECK(t == "llama" || t == "mixtral" || t == "qwen2" || t == "qwen2_moe", r.where("model_type"), ": unsupported model_type \"", t, "\"");
  }
  if (r.has("hidden_act")) SMELT_CHECK(r.string("hidden_act") == "silu", r.where("hidden_act"), ": only \"silu\" (SwiGLU) is supported");
  if (r.has("attention_bias"))  // Llama's switch: biases on q, k, v and the output projection
    SMELT_CHECK(!r.boolean("attention_bias"), r.where("attention_bias"), ": an output projection bias is not supported (q, k and v biases are: Qwen2)");
  if (r.has("mlp_bias")) SMELT_CHECK(!r.boolean("mlp_bias"), r.where("mlp_bias"), ": biases are not supported");
  c.vocab_size = r.integer("vocab_size");
  c.hidden_size = r.integer("hidden_size");
  c.intermediate_size = r.integer("intermediate_size");
  c.num_hidden_layers = r.integer("num_hidden_layers");
  c.num_attention_heads = r.integer("num_attention_heads");
  c.num_key_value_heads = r.integer("num_key_value_heads", c.num_attention_heads);
  c.max_position_embeddings = r.integer("max_position_embeddings", c.max_position_embeddings);
  c.rope_theta = r.number("rope_theta", c.rope_theta);
  // transformers ≥ 5 writes RoPE settings as rope_parameters {rope_theta, rope_type[, factor]}.
  if (r.has("rope_parameters") && !r.raw("rope_parameters").is_null()) {
    JsonReader rp = r.object("rope_parameters");
    c.rope_theta = rp.number("rope_theta", c.rope_theta);
    const std::string type = rp.string("rope_type", "default");
    SMELT_CHECK(type == "default" || type == "linear", rp.where("rope_type"), ": only default and linear RoPE are supported, got \"", type, "\"");
    if (type == "linear") c.rope_scaling_factor = rp.number("factor");
    rp.finish();
  }
  c.rms_norm_eps = r.number("rms_norm_eps", c.rms_norm_eps);
  c.initializer_range = r.number("initializer_range", c.initializer_range);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", c.tie_word_embeddings);
  if (r.has("rope_scaling") && !r.raw("rope_scaling").is_null()) {
    JsonReader s = r.object("rope_scaling");
    std::string type = s.has("rope_type") ? s.string("rope_type") : s.string("type");
    SMELT_CHECK(type == "linear", s.where("type"), ": only linear RoPE scaling is supported, got \"", type, "\"");
    c.rope_scaling_factor = s.number("factor");
    s.finish();
  }
  // Mixture of experts.
  c.num_local_experts = r.integer("num_local_experts", r.has("num_experts") ? r.integer("num_experts") : 0);
  if (r.has("num_local_experts"))
    SMELT_CHECK(c.num_local_experts >= 1, r.where("num_local_experts"), ": must be ≥ 1 (leave it out for a dense model), got ",
                c.num_local_experts);
  c.num_experts_per_tok = r.integer("num_experts_per_tok", c.num_experts_per_tok);
  c.moe_intermediate_size = r.integer("moe_intermediate_size", c.moe_intermediate_size);
  c.decoder_sparse_step = r.integer("decoder_sparse_step", c.decoder_sparse_step);
  c.scoring_func = r.string("scoring_func", c.scoring_func);
  // Architecture defaults where the HF config leaves a field out: Mixtral always renormalises the
  // top-k weights; Qwen2-MoE does only with norm_topk_prob and always gates its shared expert.
  const bool qwen = r.has("model_type") && r.raw("model_type") == "qwen2_moe";
  c.norm_topk_prob = r.boolean("norm_topk_prob", qwen ? false : c.norm_topk_prob);
  c.routed_scaling_factor = r.number("routed_scaling_factor", c.routed_scaling_factor);
  c.routed_weights = r.string("routed_weights", c.routed_weights);
  c.routing_policies = r.strings("routing_policies", c.routing_policies);
  c.router_aux_loss_coef = r.number("router_aux_loss_coef", c.router_aux_loss_coef);
  c.router_z_loss_coef = r.number("router_z_loss_coef", c.router_z_loss_coef);
  c.moe_balancing = r.string("moe_balancing", c.moe_balancing);
  c.aux_free_update_rate = r.number("aux_free_update_rate", c.aux_free_update_rate);
  c.router_jitter_noise = r.number("router_jitter_noise", c.router_jitter_noise);
  if (r.has("capacity_factor") && !r.raw("capacity_factor").is_null()) {
    c.capacity_factor = r.number("capacity_factor");
    SMELT_CHECK(c.capacity_factor > 0, r.where("capacity_factor"), ": must be > 0 (leave it out for dropless routing), got ",
                c.capacity_factor);
  }
  c.routing = r.string("routing", c.routing);
  c.shared_expert_intermediate_size = r.integer("shared_expert_intermediate_size", c.shared_expert_intermediate_size);
  c.shared_expert_gate = r.boolean("shared_expert_gate", qwen ? c.shared_expert_intermediate_size > 0 : c.shared_expert_gate);
  // Qwen2 always has q, k and v biases; Qwen2-MoE has them unless qkv_bias is false; smelt writes
  // qkv_bias for any other architecture that has them (an upcycled Qwen2, say).
  const std::string type = r.has("model_type") ? r.raw("model_type").get<std::string>() : "llama";
  c.qkv_bias = type == "qwen2" || r.boolean("qkv_bias", type == "qwen2_moe");
  if (r.has("layer_types")) {
    for (const json& t : r.raw("layer_types"))
      SMELT_CHECK(t == "full_attention", r.where("layer_types"), ": only full attention is supported, got ", t.dump());
  }
  if (r.has("use_sliding_window")) SMELT_CHECK(!r.boolean("use_sliding_window"), r.where("use_sliding_window"), ": sliding-window attention is not supported");
  if (r.has("mlp_only_layers")) {
    const json& m = r.raw("mlp_only_layers");
    SMELT_CHECK(m.is_array() && m.empty(), r.where("mlp_only_layers"), ": only an empty list is supported (use decoder_sparse_step)");
  }
  if (r.has("head_dim") && !r.raw("head_dim").is_null()) {
    SMELT_CHECK(r.integer("head_dim") == c.hidden_size / std::max<int64_t>(c.num_attention_heads, 1), r.where("head_dim"),
                ": must equal hidden_size / num_attention_heads");
  }
  for (const char* k : {"torch_dtype", "bos_token_id", "eos_token_id", "pad_token_id", "transformers_version", "use_cache",
                        "pretraining_tp", "attention_dropout", "rope_scaling", "output_router_logits", "sliding_window",
                        "use_sliding_window", "max_window_layers", "mlp_only_layers", "num_experts", "capacity_factor", "dtype",
                        "head_dim", "rope_parameters", "qkv_bias", "layer_types", "attention_bias", "mlp_bias",
                        // Bookkeeping transformers writes that changes no computation: token ids and names, task
                        // and output switches, and its private fields ("_name_or_path", ...).
                        "unk_token_id", "sep_token_id", "cls_token_id", "mask_token_id", "decoder_start_token_id",
                        "id2label", "label2id", "problem_type", "finetuning_task", "task_specific_params", "prefix",
                        "tokenizer_class", "is_decoder", "is_encoder_decoder", "return_dict", "output_attentions",
                        "output_hidden_states", "torchscript", "tie_encoder_decoder", "chunk_size_feed_forward",
                        "transformers.js_config", "generation_config", "keys_to_ignore_at_inference"})
    r.ignore(k);
  r.ignore_prefix("_");
  r.finish();
  return c;
}

json model_config_to_json(const ModelConfig& c) {
  json j = {{"architectures", {"LlamaForCausalLM"}},
            {"model_type", "llama"},
            {"hidden_act", "silu"},
            {"vocab_size", c.vocab_size},
            {"hidden_size", c.hidden_size},
            {"intermediate_size", c.intermediate_size},
            {"num_hidden_layers", c.num_hidden_layers},
            {"num_attention_heads", c.num_attention_heads},
            {"num_key_value_heads", c.num_key_value_heads},
            {"max_position_embeddings", c.max_position_embeddings},
            {"rope_theta", c.rope_theta},
            {"rms_norm_eps", c.rms_norm_eps},
            {"initializer_range", c.initializer_range},
            {"tie_word_embeddings", c.tie_word_embeddings},
            {"torch_dtype", "float32"}};
  if (c.rope_scaling_factor != 1.0) j["rope_scaling"] = {{"type", "linear"}, {"factor", c.rope_scaling_factor}};
  if (c.qkv_bias) j["qkv_bias"] = true;
  if (c.qkv_bias && c.num_local_experts == 0) {
    j["architectures"] = {"Qwen2ForCausalLM"};
    j["model_type"] = "qwen2";
  }
  if (c.num_local_experts > 0) {
    const bool qwen = c.shared_expert_intermediate_size > 0;
    j["architectures"] = {qwen ? "Qwen2MoeForCausalLM" : "MixtralForCausalLM"};
    j["model_type"] = qwen ? "qwen2_moe" : "mixtral";
    j["num_local_experts"] = c.num_local_experts;
    if (qwen) j["num_experts"] = c.num_local_experts;
    j["num_experts_per_tok"] = c.num_experts_per_tok;
    j["moe_intermediate_size"] = c.expert_size();
    j["decoder_sparse_step"] = c.decoder_sparse_step;
    j["scoring_func"] = c.scoring_func;
    j["norm_topk_prob"] = c.norm_topk_prob;
    if (c.routed_scaling_factor != 1.0) j["routed_scaling_factor"] = c.routed_scaling_factor;
    if (c.routed_weights != "scores") j["routed_weights"] = c.routed_weights;
    if (!c.routing_policies.empty()) j["routing_policies"] = c.routing_policies;
    j["router_aux_loss_coef"] = c.router_aux_loss_coef;
    j["router_z_loss_coef"] = c.router_z_loss_coef;
    j["moe_balancing"] = c.moe_balancing;
    j["aux_free_update_rate"] = c.aux_free_update_rate;
    j["router_jitter_noise"] = c.router_jitter_noise;
    if (c.capacity_factor > 0) j["capacity_factor"] = c.capacity_factor;
    j["routing"] = c.routing;
    if (qwen) {
      j["qkv_bias"] = c.qkv_bias;  // Qwen2-MoE's default is true
      j["shared_expert_intermediate_size"] = c.shared_expert_intermediate_size;
      j["shared_expert_gate"] = c.shared_expert_gate;
    }
  }
  return j;
}

ModelConfig read_model_config(const std::string& path) {
  json j = read_json_file(path);
  JsonReader r(j, path);
  ModelConfig c = model_config_from_json(r);
  validated(path, [&] { c.validate(); });
  return c;
}

TrainConfig train_config_from_json(JsonReader& r) {
  TrainConfig c;
  c.steps = r.integer("steps", c.steps);
  c.batch_size = r.integer("batch_size", c.batch_size);
  c.seq_len = r.integer("seq_len", c.seq_len);
  c.grad_accum = r.integer("grad_accum", c.grad_accum);
  c.optimizer = r.string("optimizer", c.optimizer);
  c.lr = r.number("lr", c.lr);
  c.min_lr = r.number("min_lr", c.min_lr);
  c.warmup_steps = r.integer("warmup_steps", c.warmup_steps);
  c.weight_decay = r.number("weight_decay", c.weight_decay);
  c.beta1 = r.number("beta1", c.beta1);
  c.beta2 = r.number("beta2", c.beta2);
  c.adam_eps = r.number("adam_eps", c.adam_eps);
  c.momentum = r.number("momentum", c.momentum);
  c.grad_clip = r.number("grad_clip", c.grad_clip);
  const int64_t seed = r.integer("seed", static_cast<int64_t>(c.seed));
  SMELT_CHECK(seed >= 0, r.where("seed"), ": must be ≥ 0");
  c.seed = static_cast<uint64_t>(seed);
  c.eval_every = r.integer("eval_every", c.eval_every);
  c.eval_batches = r.integer("eval_batches", c.eval_batches);
  c.freeze = r.strings("freeze", c.freeze);
  c.activation_checkpointing = r.boolean("activation_checkpointing", c.activation_checkpointing);
  c.zero_stage = r.integer("zero_stage", c.zero_stage);
  c.expert_parallel = r.integer("expert_parallel", c.expert_parallel);
  c.precision = r.string("precision", c.precision);
  r.finish();
  return c;
}

json train_config_to_json(const TrainConfig& c) {
  return {{"steps", c.steps},         {"batch_size", c.batch_size},     {"seq_len", c.seq_len},
          {"grad_accum", c.grad_accum}, {"optimizer", c.optimizer},     {"lr", c.lr},
          {"min_lr", c.min_lr},       {"warmup_steps", c.warmup_steps}, {"weight_decay", c.weight_decay},
          {"beta1", c.beta1},         {"beta2", c.beta2},               {"adam_eps", c.adam_eps},
          {"momentum", c.momentum},   {"grad_clip", c.grad_clip},       {"seed", c.seed},
          {"eval_every", c.eval_every}, {"eval_batches", c.eval_batches}, {"freeze", c.freeze},
          {"activation_checkpointing", c.activation_checkpointing}, {"zero_stage", c.zero_stage},
          {"expert_parallel", c.expert_parallel}, {"precision", c.precision}};
}

Recipe read_recipe(const std::string& path) {
  return parse_recipe(read_file(path), path);
}

Recipe parse_recipe(const std::string& text, const std::string& path) {
  json j = parse_json_text(text, path);
  JsonReader r(j, path);
  Recipe recipe;
  if (r.has("model")) {
    JsonReader m = r.object("model");
    recipe.model = model_config_from_json(m);
    recipe.has_model = true;
  }
  if (r.has("train")) {
    JsonReader t = r.object("train");
    recipe.train = train_config_from_json(t);
  }
  if (r.has("distill")) {
    recipe.distill = r.raw("distill");
    SMELT_CHECK(recipe.distill.is_object(), r.where("distill"), ": expected an object");
  }
  if (r.has("sft")) {
    recipe.sft = r.raw("sft");
    SMELT_CHECK(recipe.sft.is_object(), r.where("sft"), ": expected an object");
  }
  r.finish();
  if (recipe.has_model) validated(path, [&] { recipe.model.validate(); });
  validated(path, [&] { recipe.train.validate(); });
  return recipe;
}

void check_composable(const std::vector<ModelConfig>& configs, const std::vector<std::string>& names) {
  const json base = model_config_to_json(configs[0]);
  for (size_t i = 0; i < configs.size(); ++i) {
    SMELT_CHECK(configs[i].num_local_experts == 0, names[i], ": is an MoE model; compose takes dense experts");
    const json other = model_config_to_json(configs[i]);
    for (auto it = base.begin(); it != base.end(); ++it) {
      if (it.key() == "initializer_range") continue;
      SMELT_CHECK(other.contains(it.key()) && other[it.key()] == it.value(), names[i], ": ", it.key(), " is ",
                  other.contains(it.key()) ? other[it.key()].dump() : "missing", " but ", names[0], " has ", it.value().dump());
    }
  }
}

}  // namespace smelt
