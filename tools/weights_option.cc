#include "tools/weights_option.h"

#include <set>

#include "io/checkpoint.h"
#include "io/files.h"
#include "runtime/log.h"

namespace smelt::tools {

void add_weights_option(CLI::App& cmd, std::string& weights) {
  cmd.add_option("--weights", weights,
                 "Keep the weight matrices in f32; bf16 (half the memory; arithmetic stays f32); or q8_0 / q4_0 (GGUF's 32-value "
                 "blocks, about 1/4 and 1/7 of the memory; decoding takes integer dot products); or q4_k (GGUF's 256-value "
                 "super-blocks with 6-bit sub-block scales and mins; matrices whose rows are not whole super-blocks take q4_0)")
      ->check(CLI::IsMember({"f32", "bf16", "q8_0", "q4_0", "q4_k"}))
      ->capture_default_str();
}

void add_map_experts_option(CLI::App& cmd, bool& map_experts) {
  cmd.add_flag("--map-experts", map_experts,
               "Leave an MoE's experts in the memory-mapped checkpoint (safetensors): an expert no token chooses is never read into RAM");
}

Transformer load_inference_model(const std::string& model, const std::string& weights, bool map_experts, Device device) {
  SMELT_CHECK(device.is_cpu() || !map_experts, "--map-experts keeps experts in the mapped file on the host; it needs --device cpu");
  SMELT_CHECK(device.is_cpu() || !is_quantized(weights_dtype(weights)), "--weights ", weights,
              ": quantised weights run on the CPU's kernels only; with --device ", device.str(), " use f32 or bf16");
  if (!device.is_cpu()) return load_model_dir(model, weights_dtype(weights), Transformer::Experts::InMemory, device);
  Transformer m = load_model_dir(model, weights_dtype(weights), map_experts ? Transformer::Experts::Mapped : Transformer::Experts::InMemory);
  if (map_experts) {  // refused where nothing would stay on disk, rather than silently loaded whole
    SMELT_CHECK(m.config().num_local_experts > 0, model, ": --map-experts: a dense model has no experts to leave on disk");
    bool mapped = false;
    for (const auto& [name, t] : m.named_parameters()) mapped = mapped || (name.find(".experts.") != std::string::npos && t.storage()->borrowed());
    SMELT_CHECK(mapped, model, ": --map-experts: --weights ", weights, " converts the experts into memory; map them with the --weights they are stored in");
  }
  m.interleave_rows();  // decoding's layout for q4_0 and q8_0 matrices (q4_k's fallback ones too)
  return m;
}

nlohmann::json weight_memory(const Transformer& model) {
  double weights = 0, experts = 0;
  std::set<const Storage*> owned_experts, mapped;
  for (const auto& [name, t] : model.named_parameters()) {
    const size_t bytes = dtype_bytes(t.dtype(), t.numel());
    weights += static_cast<double>(bytes);
    if (name.find(".experts.") == std::string::npos) continue;  // the stacked [E, rows, cols] projections
    experts += static_cast<double>(bytes);
    // Experts kept in memory are resident whole; mapped ones as far as the file was read.
    if (t.storage()->borrowed()) mapped.insert(t.storage().get());
    else owned_experts.insert(t.storage().get());
  }
  double resident = 0;
  for (const Storage* s : owned_experts) resident += static_cast<double>(s->nbytes());
  for (const Storage* s : mapped) resident += static_cast<double>(mapping_resident_bytes(s->data()));
  constexpr double kMiB = 1024.0 * 1024.0;
  return {{"rss_mib", current_rss_mib()}, {"weight_mib", weights / kMiB}, {"expert_mib", experts / kMiB}, {"expert_resident_mib", resident / kMiB}};
}

DType weights_dtype(const std::string& weights) {
  if (weights == "bf16") return DType::BF16;
  if (weights == "q8_0") return DType::Q8_0;
  if (weights == "q4_0") return DType::Q4_0;
  if (weights == "q4_k") return DType::Q4_K;
  return DType::F32;
}

}  // namespace smelt::tools
