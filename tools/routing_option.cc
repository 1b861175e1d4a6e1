#include "tools/routing_option.h"

#include <filesystem>

#include "io/json_reader.h"

namespace smelt::tools {
namespace {

RoutingPolicy parse_policy(const std::string& spec) {
  try {
    return RoutingPolicy::parse(spec);
  } catch (const Error&) {
    SMELT_FAIL("--routing '", spec, "': expected top-k:K, top-p:P, top-p:P:MAX, or a JSON file");
  }
}

RoutingPolicy policy_from_json(JsonReader& r) {
  if (r.has("top_k")) {
    RoutingPolicy p = RoutingPolicy::top_k(r.integer("top_k"));
    r.finish();
    return p;
  }
  RoutingPolicy p = RoutingPolicy::top_p(r.number("top_p"), r.integer("max_experts", 0));
  r.finish();
  return p;
}

}  // namespace

void apply_routing_option(Transformer& model, const std::string& spec) {
  if (spec.empty()) return;
  SMELT_CHECK(model.config().num_local_experts > 0, "--routing applies to MoE models; this model is dense");
  if (!std::filesystem::exists(spec)) {
    model.set_routing_policy(parse_policy(spec));
    return;
  }
  json j = read_json_file(spec);
  SMELT_CHECK(j.is_array(), spec, ": expected a JSON array with one policy per layer");
  SMELT_CHECK(j.size() == model.num_layers(), spec, ": ", j.size(), " policies for a model with ", model.num_layers(), " layers");
  std::vector<RoutingPolicy> per_layer;
  for (size_t i = 0; i < j.size(); ++i) {
    JsonReader r(j[i], spec, "[" + std::to_string(i) + "]");
    per_layer.push_back(policy_from_json(r));
  }
  model.set_routing_policies(per_layer);
}

}  // namespace smelt::tools
