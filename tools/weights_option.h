// The --weights option shared by the inference subcommands (eval, generate, bench decode): how
// the model's weight matrices are kept in memory, f32, bf16, q8_0 or q4_0 (Transformer::store_weights_in).
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include <nlohmann/json.hpp>

#include "models/transformer.h"
#include "runtime/dtype.h"

namespace smelt::tools {

void add_weights_option(CLI::App& cmd, std::string& weights);
// The dtype named by a value the option accepted ("f32", "bf16", "q8_0", "q4_0", "q4_k").
DType weights_dtype(const std::string& weights);

// --map-experts: an MoE checkpoint's experts stay in the mapped file (Transformer::Experts).
void add_map_experts_option(CLI::App& cmd, bool& map_experts);
// The model, loaded as those two options say, on `device` (--device).
Transformer load_inference_model(const std::string& model, const std::string& weights, bool map_experts, Device device = Device::cpu());
// Memory against weights: {"rss_mib", "weight_mib", "expert_mib", "expert_resident_mib"} (the
// last: how much of the experts' bytes is in memory now; with --map-experts, what was read).
nlohmann::json weight_memory(const Transformer& model);

}  // namespace smelt::tools
