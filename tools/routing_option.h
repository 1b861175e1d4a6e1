// The --routing option shared by eval and generate: one policy for every MoE layer
// ("top-k:2", "top-p:0.9", "top-p:0.9:4" = at most 4 experts) or a JSON file with one entry
// per layer ([{"top_k": 2}, {"top_p": 0.8, "max_experts": 4}, ...]; dense layers' entries are ignored).
#pragma once
#include <string>

#include "models/transformer.h"

namespace smelt::tools {

void apply_routing_option(Transformer& model, const std::string& spec);

}  // namespace smelt::tools
