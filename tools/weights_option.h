// The --weights option shared by the inference subcommands (eval, generate, bench decode): how
// the model's weight matrices are kept in memory, f32, bf16, q8_0 or q4_0 (Transformer::store_weights_in).
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "runtime/dtype.h"

namespace smelt::tools {

void add_weights_option(CLI::App& cmd, std::string& weights);
// The dtype named by a value the option accepted ("f32", "bf16", "q8_0", "q4_0").
DType weights_dtype(const std::string& weights);

}  // namespace smelt::tools
