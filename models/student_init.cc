#include "models/student_init.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "ops/ops.h"

namespace smelt {

std::vector<int64_t> evenly_spaced_layers(int64_t teacher_layers, int64_t student_layers) {
  SMELT_CHECK(student_layers >= 1 && student_layers <= teacher_layers, "the student's num_hidden_layers (", student_layers,
              ") must be between 1 and the teacher's ", teacher_layers);
  std::vector<int64_t> out;
  for (int64_t i = 0; i < student_layers; ++i)
    out.push_back(student_layers == 1 ? 0 : std::llround(static_cast<double>(i * (teacher_layers - 1)) / static_cast<double>(student_layers - 1)));
  return out;
}

namespace {

// Mean over experts of a stacked projection [E, a, b] → [a, b].
Tensor expert_mean(const Tensor& stacked) { return ops::contiguous(ops::mean(stacked, {0})); }

// The dense SwiGLU weights (gate, up, down) that stand in for teacher layer `t`'s FFN.
std::vector<Tensor> merged_ffn(const Block& block, const ModelConfig& tc, int64_t t, const std::string& teacher_name) {
  if (!block.moe) return {block.mlp.gate_proj.weight, block.mlp.up_proj.weight, block.mlp.down_proj.weight};
  const MoEBlock& moe = *block.moe;
  SMELT_CHECK(!tc.shared_expert_gate, teacher_name, ": layer ", t,
              " has a sigmoid-gated shared expert, whose token-dependent gate a dense FFN cannot hold; train the student from scratch");
  Tensor gate = expert_mean(moe.gate_proj), up = expert_mean(moe.up_proj), down = expert_mean(moe.down_proj);
  if (!moe.shared_gate_proj.defined()) return {gate, up, down};
  return {ops::cat({gate, moe.shared_gate_proj}, 0), ops::cat({up, moe.shared_up_proj}, 0), ops::cat({down, moe.shared_down_proj}, 1)};
}

int64_t ffn_width(const ModelConfig& c, int64_t layer) {
  return c.is_moe_layer(layer) ? c.expert_size() + c.shared_expert_intermediate_size : c.intermediate_size;
}

}  // namespace

Transformer student_from_teacher(const Transformer& teacher, const ModelConfig& s, const std::vector<int64_t>& layers,
                                 const std::string& teacher_name) {
  const ModelConfig& tc = teacher.config();
  s.validate();
  SMELT_CHECK(s.num_local_experts == 0, "a student initialised from teacher layers must be dense (num_local_experts 0); its MoE layers get merged experts");
  auto same = [&](const char* field, int64_t sv, int64_t tv) {
    SMELT_CHECK(sv == tv, "student ", field, " ", sv, " differs from the teacher's ", tv, " (", teacher_name,
                "); initialising from teacher layers needs the same ", field);
  };
  same("vocab_size", s.vocab_size, tc.vocab_size);
  same("hidden_size", s.hidden_size, tc.hidden_size);
  same("num_attention_heads", s.num_attention_heads, tc.num_attention_heads);
  same("num_key_value_heads", s.num_key_value_heads, tc.num_key_value_heads);
  SMELT_CHECK(s.rope_theta == tc.rope_theta && s.rope_scaling_factor == tc.rope_scaling_factor, "student rope_theta/rope_scaling differ from the teacher's (",
              teacher_name, "); copied attention layers need the same positions");
  SMELT_CHECK(s.qkv_bias == tc.qkv_bias, "student qkv_bias ", s.qkv_bias, " differs from the teacher's ", tc.qkv_bias, " (", teacher_name,
              "); copied attention layers need the same biases");
  SMELT_CHECK(static_cast<int64_t>(layers.size()) == s.num_hidden_layers, "the student has ", s.num_hidden_layers, " layers but ",
              layers.size(), " teacher layers were chosen");
  for (size_t i = 0; i < layers.size(); ++i) {
    SMELT_CHECK(layers[i] >= 0 && layers[i] < tc.num_hidden_layers, "teacher layer ", layers[i], " does not exist (", teacher_name, " has ",
                tc.num_hidden_layers, ")");
    SMELT_CHECK(i == 0 || layers[i] > layers[i - 1], "teacher layers must be distinct and increasing, got ", layers[i - 1], " then ", layers[i]);
    same("intermediate_size", s.intermediate_size, ffn_width(tc, layers[i]));
  }

  NoGradGuard no_grad;
  NamedTensors by_name = teacher.state_dict();
  auto find = [&](const std::string& name) {
    for (const auto& [n, t] : by_name)
      if (n == name) return t;
    SMELT_FAIL(teacher_name, ": has no tensor ", name);
  };
  NamedTensors out;
  const Tensor embed = find("model.embed_tokens.weight");
  out.push_back({"model.embed_tokens.weight", embed.clone()});
  out.push_back({"model.norm.weight", find("model.norm.weight").clone()});
  if (!s.tie_word_embeddings) out.push_back({"lm_head.weight", (tc.tie_word_embeddings ? embed : find("lm_head.weight")).clone()});
  for (size_t i = 0; i < layers.size(); ++i) {
    const Block& b = teacher.layer(static_cast<size_t>(layers[i]));
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const std::vector<Tensor> ffn = merged_ffn(b, tc, layers[i], teacher_name);
    const std::vector<std::pair<std::string, Tensor>> block = {
        {"input_layernorm.weight", b.input_layernorm.weight},
        {"self_attn.q_proj.weight", b.self_attn.q_proj.weight},
        {"self_attn.k_proj.weight", b.self_attn.k_proj.weight},
        {"self_attn.v_proj.weight", b.self_attn.v_proj.weight},
        {"self_attn.o_proj.weight", b.self_attn.o_proj.weight},
        {"post_attention_layernorm.weight", b.post_attention_layernorm.weight},
        {"mlp.gate_proj.weight", ffn[0]},
        {"mlp.up_proj.weight", ffn[1]},
        {"mlp.down_proj.weight", ffn[2]}};
    for (const auto& [name, t] : block) out.push_back({p + name, ops::contiguous(t).clone()});
    if (s.qkv_bias)
      for (const auto& [name, proj] : {std::pair{"q_proj", &b.self_attn.q_proj}, {"k_proj", &b.self_attn.k_proj}, {"v_proj", &b.self_attn.v_proj}})
        out.push_back({p + "self_attn." + name + ".bias", proj->bias.clone()});
  }
  return Transformer::from_tensors(s, out, "student from " + teacher_name);
}

}  // namespace smelt
