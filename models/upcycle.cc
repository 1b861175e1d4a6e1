#include "models/upcycle.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "ops/ops.h"

namespace smelt {

void UpcycleOptions::validate() const {
  SMELT_CHECK(experts >= 1, "upcycle: --experts must be ≥ 1, got ", experts);
  SMELT_CHECK(top_k >= 1 && top_k <= experts, "upcycle: --top-k (", top_k, ") must be between 1 and --experts (", experts, ")");
  SMELT_CHECK(every >= 1, "upcycle: --every must be ≥ 1, got ", every);
  // Relative to each weight's std: beyond 1 the noise outweighs the copied weights.
  SMELT_CHECK(noise >= 0 && noise <= 1, "upcycle: --noise must be in [0, 1], got ", noise);
  SMELT_CHECK(shared_experts >= 0, "upcycle: --shared-experts must be ≥ 0, got ", shared_experts);
  SMELT_CHECK(scoring_func == "softmax" || scoring_func == "sigmoid", "upcycle: scoring must be softmax or sigmoid, got ", scoring_func);
}

namespace {
// w plus N(0, (noise · std(w))²) noise.
Tensor with_noise(const Tensor& w, double noise, Philox& rng) {
  if (noise <= 0) return w.clone();
  std::vector<float> v = w.to_vector();
  double mean = 0, var = 0;
  for (float x : v) mean += x;
  mean /= static_cast<double>(v.size());
  for (float x : v) var += (x - mean) * (x - mean);
  const float std = static_cast<float>(noise * std::sqrt(var / static_cast<double>(v.size())));
  NoGradGuard no_grad;
  return ops::add(w.detach(), Tensor::randn(w.shape(), rng, 0.0f, std, w.device()));
}

Tensor scaled(const Tensor& w, float s) {
  NoGradGuard no_grad;
  return ops::mul(w.detach(), s);
}
}  // namespace

Transformer upcycle(const Transformer& dense, const UpcycleOptions& o) {
  o.validate();
  const ModelConfig& dc = dense.config();
  SMELT_CHECK(dc.num_local_experts == 0, "upcycle: the input model is already an MoE model (", dc.num_local_experts, " experts)");
  SMELT_CHECK(o.every <= dc.num_hidden_layers, "upcycle: --every ", o.every, " leaves none of the model's ", dc.num_hidden_layers,
              " layers an MoE layer");
  ModelConfig c = dc;
  c.num_local_experts = o.experts;
  c.num_experts_per_tok = o.top_k;
  c.decoder_sparse_step = o.every;
  c.moe_intermediate_size = dc.intermediate_size;
  c.norm_topk_prob = true;  // what makes the upcycled model exact
  c.scoring_func = o.scoring_func;
  c.shared_expert_intermediate_size = o.shared_experts * dc.intermediate_size;
  c.shared_expert_gate = false;
  c.validate();

  NoGradGuard no_grad;
  Philox rng(o.seed);
  const float share = 1.0f / static_cast<float>(o.shared_experts + 1);
  NamedTensors tensors;
  for (const auto& [name, t] : dense.state_dict()) {
    const std::string mlp = ".mlp.";
    const size_t at = name.find(mlp);
    if (at == std::string::npos) {
      tensors.push_back({name, t});
      continue;
    }
    const int64_t layer = std::stoll(name.substr(std::string("model.layers.").size()));
    if (!c.is_moe_layer(layer)) {
      tensors.push_back({name, t});
      continue;
    }
    // "model.layers.i.mlp.gate_proj.weight" → which = "gate"
    const std::string which = name.substr(at + mlp.size(), name.find("_proj") - at - mlp.size());
    const bool qwen = o.shared_experts > 0;
    const std::string prefix = name.substr(0, at) + (qwen ? ".mlp." : ".block_sparse_moe.");
    const bool down = which == "down";
    for (int64_t e = 0; e < o.experts; ++e) {
      const std::string suffix = qwen ? which + "_proj" : (which == "gate" ? "w1" : which == "up" ? "w3" : "w2");
      Tensor w = with_noise(t, o.noise, rng);
      tensors.push_back({prefix + "experts." + std::to_string(e) + "." + suffix + ".weight", down ? scaled(w, share) : w});
    }
    if (qwen) {
      // S shared copies side by side form one shared MLP of width S·F (down copies concatenated on the input axis).
      std::vector<Tensor> copies(o.shared_experts, down ? scaled(t, share) : t);
      tensors.push_back({prefix + "shared_expert." + which + "_proj.weight", ops::cat(copies, down ? 1 : 0)});
    }
    if (which == "gate") tensors.push_back({prefix + "gate.weight", Tensor::zeros({o.experts, c.hidden_size}, DType::F32, dense.device())});
  }
  Transformer moe = Transformer::from_tensors(c, tensors, "upcycle");
  return moe;
}

}  // namespace smelt
