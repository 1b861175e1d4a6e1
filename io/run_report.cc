#include "io/run_report.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>

#include "io/config_json.h"
#include "io/files.h"
#include "io/svg_plot.h"

namespace smelt {
namespace {

std::string fmt(double v, const char* f = "%.4f") {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string architecture(const ModelConfig& c) {
  if (c.num_local_experts == 0) return "LlamaForCausalLM (dense)";
  return std::string(c.shared_expert_intermediate_size > 0 ? "Qwen2MoeForCausalLM" : "MixtralForCausalLM") + " (" +
         std::to_string(c.num_local_experts) + " experts, top-" + std::to_string(c.num_experts_per_tok) +
         (c.decoder_sparse_step > 1 ? ", every " + std::to_string(c.decoder_sparse_step) + " layers" : "") + ")";
}

std::string model_table(const ModelConfig& c) {
  std::ostringstream o;
  o << "| | |\n|---|---|\n"
    << "| architecture | " << architecture(c) << " |\n"
    << "| layers × hidden | " << c.num_hidden_layers << " × " << c.hidden_size << " |\n"
    << "| attention heads (KV heads) | " << c.num_attention_heads << " (" << c.num_key_value_heads << ") |\n"
    << "| FFN width | " << (c.num_local_experts ? c.expert_size() : c.intermediate_size) << (c.num_local_experts ? " per expert" : "") << " |\n"
    << "| vocabulary | " << c.vocab_size << " |\n"
    << "| context | " << c.max_position_embeddings << " |\n"
    << "| parameters | " << c.parameter_count() << " total, " << c.active_parameter_count() << " active per token |\n";
  return o.str();
}

double number_or_nan(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : NAN;
}

}  // namespace

std::vector<json> parse_metrics_jsonl(const std::string& text, const std::string& source) {
  std::vector<json> out;
  std::istringstream in(text);
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j = parse_json_text(line, source + ":" + std::to_string(n));
    SMELT_CHECK(j.is_object() && j.contains("step") && j["step"].is_number_integer() && j.contains("loss") && j["loss"].is_number(),
                source, ":", n, ": expected an object with integer \"step\" and number \"loss\"");
    out.push_back(std::move(j));
  }
  return out;
}

std::string write_run_report(const std::string& run_dir) {
  const std::string metrics_path = run_dir + "/metrics.jsonl";
  const std::vector<json> steps = parse_metrics_jsonl(read_file(metrics_path), metrics_path);
  SMELT_CHECK(!steps.empty(), metrics_path, ": no steps recorded");
  json summary = std::filesystem::exists(run_dir + "/summary.json") ? read_json_file(run_dir + "/summary.json") : json::object();
  std::optional<ModelConfig> config;
  if (std::filesystem::exists(run_dir + "/config.json")) {
    const json cj = read_json_file(run_dir + "/config.json");
    JsonReader r(cj, run_dir + "/config.json");
    config = model_config_from_json(r);
  }
  const std::string fig_dir = run_dir + "/report";
  std::filesystem::create_directories(fig_dir);
  std::vector<std::string> figures;
  auto save = [&](const std::string& name, const std::string& svg) {
    write_file_atomic(fig_dir + "/" + name, svg);
    figures.push_back(name);
  };
  auto series = [&](const std::string& name, const char* key) {
    PlotSeries s{name, {}, {}};
    for (const json& j : steps) {
      const double v = number_or_nan(j, key);
      if (std::isfinite(v)) {
        s.x.push_back(j["step"].get<double>());
        s.y.push_back(v);
      }
    }
    return s;
  };
  save("loss.svg", svg_line_chart({series("train", "loss"), series("validation", "val_loss")}, "Loss", "step", "nats per token"));
  save("lr.svg", svg_line_chart({series("lr", "lr")}, "Learning rate", "step", "lr"));
  save("grad_norm.svg", svg_line_chart({series("grad norm", "grad_norm")}, "Gradient norm (before clipping)", "step", "L2 norm", true));
  save("tokens_per_s.svg", svg_line_chart({series("tokens/s", "tokens_per_s")}, "Throughput", "step", "tokens per second"));

  // MoE: per layer, expert load over time (at most ~120 columns) and the balancing statistics.
  std::map<int64_t, std::vector<std::pair<int64_t, std::vector<double>>>> load;  // layer → (step, load)
  std::map<int64_t, PlotSeries> cv;
  for (const json& j : steps) {
    if (!j.contains("moe") || !j["moe"].is_array()) continue;
    for (const json& l : j["moe"]) {
      if (!l.is_object() || !l.contains("layer") || !l["layer"].is_number_integer() || !l.contains("load") || !l["load"].is_array()) continue;
      bool numbers = true;
      for (const json& x : l["load"]) numbers = numbers && x.is_number();
      if (!numbers) continue;
      const int64_t layer = l["layer"].get<int64_t>();
      load[layer].push_back({j["step"].get<int64_t>(), l["load"].get<std::vector<double>>()});
      PlotSeries& s = cv[layer];
      s.name = "layer " + std::to_string(layer);
      s.x.push_back(j["step"].get<double>());
      s.y.push_back(number_or_nan(l, "load_cv"));
    }
  }
  if (!load.empty()) {
    save("aux_loss.svg", svg_line_chart({series("aux + z loss", "aux_loss")}, "MoE balancing loss (weighted)", "step", "loss"));
    std::vector<PlotSeries> cvs;
    for (auto& [layer, s] : cv) cvs.push_back(s);
    save("load_cv.svg", svg_line_chart(cvs, "Expert load: coefficient of variation", "step", "CV (0 = balanced)"));
    for (const auto& [layer, rows] : load) {
      const size_t experts = rows.front().second.size(), every = std::max<size_t>(1, rows.size() / 120);
      std::vector<std::vector<double>> grid(experts);
      std::vector<std::string> cols, names;
      for (size_t i = 0; i < rows.size(); i += every) {
        cols.push_back(std::to_string(rows[i].first));
        for (size_t e = 0; e < experts; ++e) grid[e].push_back(e < rows[i].second.size() ? rows[i].second[e] : NAN);
      }
      for (size_t e = 0; e < experts; ++e) names.push_back("expert " + std::to_string(e));
      save("expert_load_layer" + std::to_string(layer) + ".svg",
           svg_heatmap(grid, names, cols, "Layer " + std::to_string(layer) + ": share of token-slots per expert", "step"));
    }
  }

  const json& last = steps.back();
  std::ostringstream md;
  md << "# Run report: " << run_dir << "\n\n";
  if (config) md << "## Model\n\n" << model_table(*config) << "\n";
  md << "## Training\n\n| | |\n|---|---|\n"
     << "| steps | " << last["step"].get<int64_t>() << " |\n";
  if (last.contains("tokens") && last["tokens"].is_number()) md << "| tokens seen | " << last["tokens"].dump() << " |\n";
  if (last.contains("elapsed_s")) md << "| wall time | " << fmt(number_or_nan(last, "elapsed_s"), "%.1f") << " s |\n";
  md << "| final training loss | " << fmt(last["loss"].get<double>()) << " |\n";
  if (summary.contains("val_loss")) md << "| final validation loss | " << fmt(number_or_nan(summary, "val_loss")) << " |\n";
  if (summary.contains("val_bits_per_byte")) md << "| validation bits per byte | " << fmt(number_or_nan(summary, "val_bits_per_byte")) << " |\n";
  if (last.contains("tokens_per_s")) md << "| tokens/s (last step) | " << fmt(number_or_nan(last, "tokens_per_s"), "%.0f") << " |\n";
  if (summary.contains("peak_rss_mib")) md << "| peak RSS | " << fmt(number_or_nan(summary, "peak_rss_mib"), "%.0f") << " MiB |\n";
  md << "\n## Plots\n\n";
  for (const std::string& f : figures) md << "![" << f.substr(0, f.size() - 4) << "](report/" << f << ")\n\n";
  if (last.contains("moe") && last["moe"].is_array() && !last["moe"].empty()) {
    md << "## Experts at the last step\n\n| layer | load CV | router entropy | dropped | active experts | aux loss | z loss |\n"
          "|---|---|---|---|---|---|---|\n";
    for (const json& l : last["moe"])
      md << "| " << number_or_nan(l, "layer") << " | " << fmt(number_or_nan(l, "load_cv"), "%.3f") << " | "
         << fmt(number_or_nan(l, "router_entropy"), "%.3f") << " | " << fmt(number_or_nan(l, "dropped_fraction"), "%.3f") << " | "
         << fmt(number_or_nan(l, "active_experts"), "%.2f") << " | " << fmt(number_or_nan(l, "aux_loss"), "%.3f") << " | "
         << fmt(number_or_nan(l, "z_loss"), "%.3f") << " |\n";
  }
  const std::string path = run_dir + "/report.md";
  write_file_atomic(path, md.str());
  return path;
}

std::string model_card(const ModelConfig& c, const json& summary, const json& data) {
  std::ostringstream md;
  md << "# smelt model\n\nTrained with smelt, a C++ framework for Mixture-of-Experts language models. Weights are "
        "`model.safetensors` under Hugging Face names; `config.json` is a Hugging Face configuration.\n\n"
     << "## Architecture\n\n" << model_table(c) << "\n## Data\n\n| | |\n|---|---|\n";
  for (auto it = data.begin(); it != data.end(); ++it)
    md << "| " << it.key() << " | " << (it.value().is_string() ? it.value().get<std::string>() : it.value().dump()) << " |\n";
  md << "\n## Results\n\n| | |\n|---|---|\n";
  for (const char* key : {"steps", "tokens", "final_loss", "val_loss", "val_bits_per_byte", "tokens_per_s", "elapsed_s", "peak_rss_mib"})
    if (summary.contains(key)) md << "| " << key << " | " << summary[key].dump() << " |\n";
  md << "\n## Use\n\n    smelt generate --model DIR --prompt \"...\"\n    smelt eval --model DIR --data FILE\n"
        "    smelt export --model DIR --out HF_DIR   # then transformers' from_pretrained(HF_DIR)\n";
  return md.str();
}

}  // namespace smelt
