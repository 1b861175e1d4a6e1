// Composing dense domain experts into one MoE (Branch-Train-MiX, mergekit-moe): expert i's FFN
// in layer L becomes expert i of the MoE in layer L; attention, embeddings and norms are the
// experts' average (BTX) or the base model's; each router row starts from what expert i's
// domain looks like at that layer:
//   hidden  d = mean FFN input of expert i on its prompts − the mean over all experts (or over
//           its negative prompts), row = 4 · d / ‖d‖², so a token at the domain mean scores
//           about 4 above the average (measured with each expert's own model);
//   lda     d whitened by the FFN inputs' pooled within-domain covariance S (plus a small ridge):
//           row ∝ S⁻¹ d, scaled the same way (a linear discriminant: directions that every
//           domain varies along weigh less, directions that separate the domains more);
//   auto    per layer, hidden or lda: whichever routes held-out prompt tokens of the composed
//           model better to their own expert (fit on half of each domain's windows, chosen on
//           the other half, then refit on all);
//   embed   the same with mean token embeddings instead of FFN inputs (one direction for all layers);
//   random  N(0, initializer_range).
// With a shared expert (the base FFN), the routed experts and the shared one each carry half of
// the down projection, so a composition of identical experts reproduces the base model.
#pragma once
#include <string>
#include <vector>

#include "models/transformer.h"

namespace smelt {

// Whether `name` is a router init compose knows; kGateInits lists them for messages.
bool known_gate_init(const std::string& name);
inline constexpr const char* kGateInits = "hidden, lda, auto, embed or random";

struct ComposeOptions {
  int64_t top_k = 2;
  std::string gate_init = "hidden";  // hidden | lda | auto | embed | random
  std::string shared = "average";    // attention, embeddings, norms: average | base
  bool shared_expert = false;        // the base model's FFN as an always-on expert
  uint64_t seed = 0;
  void validate(int64_t experts) const;
};

// What gate_init auto chose, per layer: "hidden" or "lda", and how many domains' held-out tokens
// each candidate sent mostly to their own expert ({hidden, lda}).
struct ComposeReport {
  std::vector<std::string> layer_gate_init;
  std::vector<std::pair<int64_t, int64_t>> held_out_own_largest;
};

// prompts[i] (and negatives[i] when given): token ids [n, T] of expert i's domain.
Transformer compose(const Transformer& base, const std::vector<const Transformer*>& experts, const std::vector<Tensor>& prompts,
                    const std::vector<Tensor>& negatives, const ComposeOptions& options, ComposeReport* report = nullptr);

}  // namespace smelt
