// smelt inspect: what a model or checkpoint directory holds — architecture, parameter counts
// (total and active per token), every tensor's shape and dtype, training progress, and the last
// recorded routing statistics of MoE layers.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "io/checkpoint.h"
#include "io/config_json.h"
#include "io/gguf.h"
#include "io/json_reader.h"
#include "io/safetensors.h"
#include "tools/commands.h"

namespace smelt::tools {
namespace {

struct InspectArgs {
  std::string model;
  bool json_out = false, tensors = false;
};

void run_inspect(const InspectArgs& a) {
  namespace fs = std::filesystem;
  const bool gguf = fs::is_regular_file(a.model) && is_gguf_file(a.model);
  SMELT_CHECK(gguf || fs::is_directory(a.model), a.model, ": not a model directory or GGUF file");
  const ModelConfig c = read_model_dir_config(a.model);
  int64_t stored = 0;
  json tensors = json::array();
  if (gguf) {  // the file's own tensors, names and ggml types as stored
    for (const GgufTensorInfo& t : read_gguf(a.model).tensors) {
      stored += t.numel();
      tensors.push_back({{"name", t.name}, {"shape", t.shape()}, {"dtype", ggml_type_name(static_cast<uint32_t>(t.type))}});
    }
  } else {
    for (const auto& [name, t] : read_safetensors(a.model + "/model.safetensors").tensors) {
      stored += t.numel();
      tensors.push_back({{"name", name}, {"shape", t.shape()}, {"dtype", dtype_safetensors_name(t.dtype())}});
    }
  }
  json layers = json::array();
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers.push_back(c.is_moe_layer(i) ? "moe" : "dense");
  json out = {{"model", a.model},
              {"architecture", model_config_to_json(c)["architectures"][0]},
              {"config", model_config_to_json(c)},
              {"layers", layers},
              {"parameters", c.parameter_count()},
              {"active_parameters", c.active_parameter_count()},
              {"stored_elements", stored},
              {"tensor_count", tensors.size()}};
  if (a.tensors) out["tensors"] = tensors;
  if (fs::exists(a.model + "/trainer_state.json")) {
    json st = read_json_file(a.model + "/trainer_state.json");
    out["checkpoint"] = {{"step", st.value("step", 0)}, {"tokens", st.value("tokens", 0)}};
  }
  // The last metrics line holds the latest per-layer routing statistics of an MoE run.
  if (fs::exists(a.model + "/metrics.jsonl")) {
    std::ifstream in(a.model + "/metrics.jsonl");
    std::string line, last;
    while (std::getline(in, line))
      if (!line.empty()) last = line;
    if (!last.empty()) {
      json m = parse_json_text(last, a.model + "/metrics.jsonl");
      out["last_step"] = m.value("step", 0);
      if (m.contains("moe")) out["routing"] = m["moe"];
    }
  }
  if (a.json_out) {
    std::printf("%s\n", out.dump().c_str());
    return;
  }
  std::printf("%s: %s, %ld layers (%s), hidden %ld, vocab %ld\n", a.model.c_str(), out["architecture"].get<std::string>().c_str(),
              static_cast<long>(c.num_hidden_layers), layers.dump().c_str(), static_cast<long>(c.hidden_size),
              static_cast<long>(c.vocab_size));
  std::printf("parameters: %ld total, %ld active per token; %zu tensors\n", static_cast<long>(c.parameter_count()),
              static_cast<long>(c.active_parameter_count()), tensors.size());
  if (c.num_local_experts > 0)
    std::printf("experts: %ld per MoE layer, top-%ld, %s scores, balancing %s\n", static_cast<long>(c.num_local_experts),
                static_cast<long>(c.num_experts_per_tok), c.scoring_func.c_str(), c.moe_balancing.c_str());
  if (out.contains("checkpoint"))
    std::printf("checkpoint: step %ld, %ld tokens\n", static_cast<long>(out["checkpoint"]["step"].get<int64_t>()),
                static_cast<long>(out["checkpoint"]["tokens"].get<int64_t>()));
  if (out.contains("routing"))
    for (const json& l : out["routing"])
      std::printf("layer %ld: load %s, cv %.3f, entropy %.3f, dropped %.3f\n", static_cast<long>(l["layer"].get<int64_t>()),
                  l["load"].dump().c_str(), l["load_cv"].get<double>(), l["router_entropy"].get<double>(),
                  l["dropped_fraction"].get<double>());
  if (a.tensors)
    for (const json& t : tensors)
      std::printf("  %-60s %-5s %s\n", t["name"].get<std::string>().c_str(), t["dtype"].get<std::string>().c_str(), t["shape"].dump().c_str());
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto a = std::make_shared<InspectArgs>();
  CLI::App* cmd = app.add_subcommand("inspect", "What a model or checkpoint holds: shapes, dtypes, parameter counts, routing stats");
  cmd->add_option("--model", a->model, "Model or checkpoint directory")->required();
  cmd->add_flag("--tensors", a->tensors, "List every tensor with its shape and dtype");
  cmd->add_flag("--json", a->json_out, "Print as one JSON object");
  cmd->callback([a] { run_inspect(*a); });
}

}  // namespace smelt::tools
