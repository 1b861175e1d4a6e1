#include "tools/weights_option.h"

namespace smelt::tools {

void add_weights_option(CLI::App& cmd, std::string& weights) {
  cmd.add_option("--weights", weights, "Keep the weight matrices in f32, or in bf16 (half the memory; arithmetic stays f32)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
}

DType weights_dtype(const std::string& weights) { return weights == "bf16" ? DType::BF16 : DType::F32; }

}  // namespace smelt::tools
