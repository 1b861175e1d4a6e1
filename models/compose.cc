#include "models/compose.h"

#include <algorithm>

#include "autograd/grad_mode.h"
#include "models/router_init.h"
#include "ops/ops.h"

namespace smelt {

bool known_gate_init(const std::string& name) {
  return name == "hidden" || name == "lda" || name == "auto" || name == "embed" || name == "random";
}

void ComposeOptions::validate(int64_t experts) const {
  SMELT_CHECK(experts >= 2, "compose: give at least two --experts, got ", experts);
  SMELT_CHECK(top_k >= 1 && top_k <= experts, "compose: --top-k (", top_k, ") must be between 1 and the number of experts (", experts, ")");
  SMELT_CHECK(known_gate_init(gate_init), "compose: --gate-init must be ", kGateInits, ", got \"", gate_init, "\"");
  SMELT_CHECK(shared == "average" || shared == "base", "compose: --shared-weights must be average or base, got \"", shared, "\"");
}

namespace {
// What compose() itself needs: dense inputs whose tensors have the base's shapes (the tool
// compares every config field first, with io/'s check_composable, to name the one that differs).
void check_same_shapes(const Transformer& base, const std::vector<const Transformer*>& experts) {
  const NamedTensors want = base.named_parameters();
  for (size_t i = 0; i < experts.size(); ++i) {
    SMELT_CHECK(experts[i]->config().num_local_experts == 0, "expert ", i, ": is an MoE model; compose takes dense experts");
    const NamedTensors got = experts[i]->named_parameters();
    SMELT_CHECK(got.size() == want.size(), "expert ", i, ": has ", got.size(), " tensors, the base ", want.size());
    for (size_t t = 0; t < want.size(); ++t)
      SMELT_CHECK(got[t].first == want[t].first && got[t].second.shape() == want[t].second.shape(), "expert ", i, ": tensor '",
                  got[t].first, "' ", got[t].second.str(), " differs from the base's '", want[t].first, "' ", want[t].second.str());
  }
}

// lda's ridge, as a share of the mean variance of the FFN inputs (for the few thousand prompt
// tokens against C² covariance entries).
constexpr double kLdaRidge = 0.1;

Tensor scaled(const Tensor& w, float s) { return ops::mul(w, s); }

// The MoE from the experts' FFNs, the shared tensors (the experts' average or the base's) and
// one router per layer.
Transformer assemble(const Transformer& base, const std::vector<const Transformer*>& experts, const ModelConfig& c,
                     const std::vector<Tensor>& routers, const ComposeOptions& o) {
  const int64_t E = static_cast<int64_t>(experts.size());
  std::vector<NamedTensors> expert_tensors;
  for (const Transformer* e : experts) expert_tensors.push_back(e->state_dict());
  const bool qwen = o.shared_expert;
  const float routed_share = o.shared_expert ? 0.5f : 1.0f;
  NamedTensors tensors;
  const NamedTensors base_tensors = base.state_dict();
  for (size_t k = 0; k < base_tensors.size(); ++k) {
    const auto& [name, t] = base_tensors[k];
    const size_t at = name.find(".mlp.");
    if (at == std::string::npos) {
      if (o.shared == "base") {
        tensors.push_back({name, t});
      } else {
        Tensor sum = expert_tensors[0][k].second.clone();
        for (int64_t i = 1; i < E; ++i) sum = ops::add(sum, expert_tensors[i][k].second);
        tensors.push_back({name, scaled(sum, 1.0f / static_cast<float>(E))});
      }
      continue;
    }
    const int64_t layer = std::stoll(name.substr(std::string("model.layers.").size()));
    const std::string which = name.substr(at + 5, name.find("_proj") - at - 5);  // gate, up or down
    const std::string prefix = name.substr(0, at) + (qwen ? ".mlp." : ".block_sparse_moe.");
    const bool down = which == "down";
    for (int64_t i = 0; i < E; ++i) {
      SMELT_ASSERT(expert_tensors[i][k].first == name, "compose: tensor order differs between models");
      const std::string suffix = qwen ? which + "_proj" : (which == "gate" ? "w1" : which == "up" ? "w3" : "w2");
      const Tensor& w = expert_tensors[i][k].second;
      tensors.push_back({prefix + "experts." + std::to_string(i) + "." + suffix + ".weight", down ? scaled(w, routed_share) : w});
    }
    if (qwen) tensors.push_back({prefix + "shared_expert." + which + "_proj.weight", down ? scaled(t, 0.5f) : t});
    if (which == "gate") tensors.push_back({prefix + "gate.weight", routers[layer].to(base.device())});  // routers are fitted on the host
  }
  return Transformer::from_tensors(c, tensors, "compose");
}

// How well one layer of `moe` sends each domain's held-out tokens to that domain's own expert.
struct LayerRouting {
  int64_t own_largest = 0;             // domains whose own expert has the largest share
  double min_margin = -1;              // the smallest lead of an own share over the next expert's
  bool better_than(const LayerRouting& o) const {
    return own_largest != o.own_largest ? own_largest > o.own_largest : min_margin > o.min_margin;
  }
};

LayerRouting layer_routing(const Transformer& moe, size_t layer, const std::vector<Tensor>& held_out) {
  LayerRouting r;
  r.min_margin = 1;
  for (size_t d = 0; d < held_out.size(); ++d) {
    moe.forward(held_out[d]);
    const std::vector<double>& load = moe.layer(layer).moe->stats().load;
    double other = 0;
    for (size_t e = 0; e < load.size(); ++e)
      if (e != d) other = std::max(other, load[e]);
    r.own_largest += load[d] > other;
    r.min_margin = std::min(r.min_margin, load[d] - other);
  }
  return r;
}

Tensor first_windows(const Tensor& ids, int64_t n) { return ops::slice(ids, 0, 0, n); }
Tensor last_windows(const Tensor& ids, int64_t from) { return ops::slice(ids, 0, from, ids.size(0)); }

// gate_init auto: fits hidden and lda routers on the first half of each domain's prompt windows,
// then, layer by layer from the first (a layer's routing depends on the layers below it), keeps
// in the composed model the one that routes the other half better (LayerRouting), and refits the
// chosen kind on all the windows. Neither kind wins everywhere: whitening separates domains that
// share their loudest directions, but on some layers it fits the prompts' noise instead.
std::vector<Tensor> routers_auto(const Transformer& base, const std::vector<const Transformer*>& experts, const ModelConfig& c,
                                 const std::vector<Tensor>& prompts, const ComposeOptions& o, ComposeReport* report) {
  std::vector<Tensor> fit, held_out;
  for (const Tensor& p : prompts) {
    SMELT_CHECK(p.size(0) >= 2, "compose: --gate-init auto needs at least two prompt windows per expert (half to fit, half to choose), got ", p.size(0));
    fit.push_back(first_windows(p, p.size(0) / 2));
    held_out.push_back(last_windows(p, p.size(0) / 2));
  }
  const std::vector<Tensor> hidden = routers_from_hidden(experts, fit, {}), lda = routers_from_lda(experts, fit, kLdaRidge);
  Transformer moe = assemble(base, experts, c, hidden, o);
  std::vector<bool> use_lda(hidden.size(), false);
  for (size_t l = 0; l < hidden.size(); ++l) {
    const LayerRouting with_hidden = layer_routing(moe, l, held_out);
    moe.layer(l).moe->router.copy_from(lda[l]);
    const LayerRouting with_lda = layer_routing(moe, l, held_out);
    use_lda[l] = with_lda.better_than(with_hidden);
    if (!use_lda[l]) moe.layer(l).moe->router.copy_from(hidden[l]);
    if (report) {
      report->layer_gate_init.push_back(use_lda[l] ? "lda" : "hidden");
      report->held_out_own_largest.push_back({with_hidden.own_largest, with_lda.own_largest});
    }
  }
  const std::vector<Tensor> all_hidden = routers_from_hidden(experts, prompts, {}), all_lda = routers_from_lda(experts, prompts, kLdaRidge);
  std::vector<Tensor> routers;
  for (size_t l = 0; l < hidden.size(); ++l) routers.push_back(use_lda[l] ? all_lda[l] : all_hidden[l]);
  return routers;
}

std::vector<Tensor> initial_routers(const Transformer& base, const std::vector<const Transformer*>& experts, const ModelConfig& c,
                                    const std::vector<Tensor>& prompts, const std::vector<Tensor>& negatives, const ComposeOptions& o,
                                    ComposeReport* report) {
  const int64_t E = static_cast<int64_t>(experts.size());
  if (o.gate_init == "random") {
    Philox rng(o.seed);
    std::vector<Tensor> routers;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) routers.push_back(Tensor::randn({E, c.hidden_size}, rng, 0.0f, static_cast<float>(c.initializer_range)));
    return routers;
  }
  if (o.gate_init == "embed") return routers_from_embeddings(experts, prompts, negatives);
  if (o.gate_init == "hidden") return routers_from_hidden(experts, prompts, negatives);
  SMELT_CHECK(negatives.empty(), "compose: --gate-init ", o.gate_init, " separates the experts' own prompts; negative prompts are for hidden and embed");
  if (o.gate_init == "lda") return routers_from_lda(experts, prompts, kLdaRidge);
  return routers_auto(base, experts, c, prompts, o, report);
}
}  // namespace

Transformer compose(const Transformer& base, const std::vector<const Transformer*>& experts, const std::vector<Tensor>& prompts,
                    const std::vector<Tensor>& negatives, const ComposeOptions& o, ComposeReport* report) {
  const int64_t E = static_cast<int64_t>(experts.size());
  o.validate(E);
  const ModelConfig& bc = base.config();
  SMELT_CHECK(bc.num_local_experts == 0, "base: is an MoE model; compose takes dense models");
  check_same_shapes(base, experts);
  SMELT_CHECK(o.gate_init == "random" || static_cast<int64_t>(prompts.size()) == E, "compose: --gate-init ", o.gate_init,
              " needs prompts for each of the ", E, " experts, got ", prompts.size());
  SMELT_CHECK(negatives.empty() || static_cast<int64_t>(negatives.size()) == E, "compose: give negative prompts for every expert or none");

  ModelConfig c = bc;
  c.num_local_experts = E;
  c.num_experts_per_tok = o.top_k;
  c.moe_intermediate_size = bc.intermediate_size;
  c.decoder_sparse_step = 1;
  c.norm_topk_prob = true;
  c.shared_expert_intermediate_size = o.shared_expert ? bc.intermediate_size : 0;
  c.shared_expert_gate = false;
  c.validate();

  NoGradGuard no_grad;
  const std::vector<Tensor> routers = initial_routers(base, experts, c, prompts, negatives, o, report);
  return assemble(base, experts, c, routers, o);
}

}  // namespace smelt
