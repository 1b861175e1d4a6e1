#include "tools/weights_option.h"

namespace smelt::tools {

void add_weights_option(CLI::App& cmd, std::string& weights) {
  cmd.add_option("--weights", weights,
                 "Keep the weight matrices in f32; bf16 (half the memory; arithmetic stays f32); or q8_0 / q4_0 (GGUF's 32-value "
                 "blocks, about 1/4 and 1/7 of the memory; decoding takes integer dot products)")
      ->check(CLI::IsMember({"f32", "bf16", "q8_0", "q4_0"}))
      ->capture_default_str();
}

DType weights_dtype(const std::string& weights) {
  if (weights == "bf16") return DType::BF16;
  if (weights == "q8_0") return DType::Q8_0;
  if (weights == "q4_0") return DType::Q4_0;
  return DType::F32;
}

}  // namespace smelt::tools
