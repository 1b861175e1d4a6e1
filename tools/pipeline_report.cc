// smelt pipeline's report (see pipeline_report.h).
#include "tools/pipeline_report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "autograd/grad_mode.h"
#include "io/checkpoint.h"
#include "io/files.h"
#include "io/run_report.h"
#include "io/svg_plot.h"
#include "io/token_data.h"
#include "ops/ops.h"
#include "runtime/log.h"

namespace smelt::tools {
namespace {

namespace fs = std::filesystem;

struct Scores {
  std::map<std::string, double> loss;  // domain → nats per token
};

// Mean next-token loss on up to `windows` validation windows of each domain; for an MoE also
// the share of each domain's token-slots per expert and layer.
Scores score(const Transformer& model, const std::map<std::string, TokenDataset>& val, int64_t T, int64_t windows,
             std::map<std::string, std::vector<std::vector<double>>>* routing) {
  NoGradGuard no_grad;
  Scores s;
  for (const auto& [domain, data] : val) {
    const int64_t n = std::min(windows, data.windows(T));
    double total = 0;
    int64_t count = 0;
    std::vector<std::vector<double>> load;
    // Windows spread evenly over the split (its first ones may all be one document), 8 a batch.
    const int64_t batches = (n + 7) / 8;
    for (int64_t i = 0; i < batches; ++i) {
      const Batch b = batch_on(data.eval_batch(i, batches, 8, T), model.device());
      const Tensor logits = model.forward(b.ids);
      total += ops::cross_entropy(ops::reshape(logits, {-1, logits.size(-1)}), ops::reshape(b.targets, {-1})).item() * b.ids.numel();
      count += b.ids.numel();
      if (routing) {
        const auto stats = model.moe_stats();
        load.resize(stats.size());
        for (size_t l = 0; l < stats.size(); ++l) {
          load[l].resize(stats[l].second.load.size(), 0.0);
          for (size_t e = 0; e < stats[l].second.load.size(); ++e) load[l][e] += stats[l].second.load[e] * static_cast<double>(b.ids.numel());
        }
      }
    }
    s.loss[domain] = count ? total / static_cast<double>(count) : NAN;
    if (routing) {
      for (auto& layer : load)
        for (double& v : layer) v /= static_cast<double>(count);
      (*routing)[domain] = load;
    }
  }
  return s;
}

std::string one_decimal(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

// Train loss over steps of one stage's run, from its metrics.jsonl.
PlotSeries loss_curve(const std::string& label, const std::string& dir) {
  PlotSeries sr{label, {}, {}};
  const std::string path = dir + "/metrics.jsonl";
  for (const json& j : parse_metrics_jsonl(read_file(path), path)) {
    sr.x.push_back(j.at("step").get<double>());
    sr.y.push_back(j.at("loss").get<double>());
  }
  return sr;
}

// "## Training": steps, tokens, wall time and throughput of every training stage (from its
// summary.json), and the loss curves per stage as SVG.
void write_training_section(std::ostringstream& md, json& results, const std::string& out, const std::map<std::string, std::string>& corpus) {
  // Stages that trained here (a pretrained base, or a skipped instruct stage, has no summary).
  std::vector<std::pair<std::string, std::string>> stages, early, experts;
  for (const auto& [label, dir] : {std::pair<std::string, std::string>{"base", "base"}, {"instruct", "instruct"}})
    if (fs::exists(out + "/" + dir + "/summary.json")) early.push_back({label, dir});
  for (const auto& [name, file] : corpus) experts.push_back({"expert " + name, "expert_" + name});
  stages = early;
  stages.insert(stages.end(), experts.begin(), experts.end());
  const std::pair<std::string, std::string> mix{"MoE MiX", "moe_mix"}, student{"student (distilled)", "student"},
      plain{"student (no distillation)", "student_plain"};
  stages.push_back(mix);
  stages.push_back(student);
  stages.push_back(plain);
  md << "\n## Training\n\n| stage | steps | tokens | wall time | tokens/s | final train loss | validation loss | peak RSS MiB |\n"
        "|---|---|---|---|---|---|---|---|\n";
  double total_seconds = 0;
  json table = json::object();
  for (const auto& [label, dir] : stages) {
    const json sm = read_json_file(out + "/" + dir + "/summary.json");
    total_seconds += sm.value("elapsed_s", 0.0);
    char row[256];
    std::snprintf(row, sizeof row, "| %s | %ld | %ld | %s | %.0f | %.3f | %.3f | %.0f |\n", label.c_str(), static_cast<long>(sm.value("steps", int64_t{0})),
                  static_cast<long>(sm.value("tokens", int64_t{0})), format_duration(sm.value("elapsed_s", 0.0)).c_str(), sm.value("tokens_per_s", 0.0),
                  sm.value("final_loss", NAN), sm.value("val_loss", NAN), sm.value("peak_rss_mib", 0.0));
    md << row;
    table[label] = sm;
  }
  md << "\nTraining time of all stages: " << format_duration(total_seconds)
     << " (tokenizer, data preparation, composing and scoring come on top). The distilled student's train loss is its objective "
        "(alpha · divergence + (1 − alpha) · cross-entropy, plus any hidden-state term), so compare students by validation loss.\n\n";
  results["training"] = table;
  auto chart = [&](const std::string& name, const std::string& title, const std::vector<std::pair<std::string, std::string>>& which) {
    std::vector<PlotSeries> series;
    for (const auto& [label, dir] : which) series.push_back(loss_curve(label, out + "/" + dir));
    write_file_atomic(out + "/report/" + name, svg_line_chart(series, title, "step", "train loss (nats per token)"));
    md << "![" << title << "](report/" << name << ")\n\n";
  };
  early.push_back(mix);
  chart("loss_base_instruct_mix.svg", "Base, instruct and MoE MiX", early);
  chart("loss_experts.svg", "Domain experts", experts);
  chart("loss_students.svg", "Students", {student, plain});
}

// "## Composition check": per domain, the MoE after MiX against the best single expert there
// (the pipeline's promise: within 2% on every domain, better on the mixture), and the routing
// diagnostic: per layer, the share of each domain's token-slots that go to its own expert (expert
// i was fine-tuned on the i-th domain) and whether that is the domain's largest share.
void write_composition_section(std::ostringstream& md, json& results, const std::map<std::string, std::string>& corpus) {
  const json& moe = results.at("MoE after MiX");
  md << "\n## Composition check\n\n| domain | best expert | its perplexity | MoE after MiX | MoE / best |\n|---|---|---|---|---|\n";
  json check = json::object();
  std::vector<std::string> names;
  for (const auto& [domain, file] : corpus) names.push_back(domain);
  names.push_back("mixed");
  for (const std::string& domain : names) {
    std::string best;
    for (const auto& [expert, file] : corpus)
      if (best.empty() || results.at("expert " + expert).at(domain).get<double>() < results.at("expert " + best).at(domain).get<double>()) best = expert;
    const double b = results.at("expert " + best).at(domain).get<double>(), m = moe.at(domain).get<double>();
    char row[256];
    std::snprintf(row, sizeof row, "| %s | %s | %.1f | %.1f | %.3f |\n", domain.c_str(), best.c_str(), b, m, m / b);
    md << row;
    check[domain] = {{"best_expert", best}, {"best_expert_ppl", b}, {"moe_ppl", m}, {"moe_over_best", m / b}};
    log_info("MoE after MiX on " + domain + ": " + one_decimal(m) + " (best expert, " + best + ": " + one_decimal(b) + ")");
  }
  results["composition"] = check;
  if (!results.contains("routing")) return;
  md << "\nShare of each domain's token-slots routed to its own expert, per layer (* where that is the domain's largest share):\n\n| domain |";
  const json& routing = results.at("routing");
  const size_t layers = routing.begin()->size();
  for (size_t l = 0; l < layers; ++l) md << " layer " << l << " |";
  md << "\n|---|";
  for (size_t l = 0; l < layers; ++l) md << "---|";
  md << "\n";
  json own = json::object();
  int64_t expert = 0;
  for (const auto& [domain, file] : corpus) {
    md << "| " << domain << " |";
    std::vector<double> shares;
    for (size_t l = 0; l < layers; ++l) {
      const std::vector<double> load = routing.at(domain).at(l).get<std::vector<double>>();
      const bool largest = std::max_element(load.begin(), load.end()) - load.begin() == expert;
      char cell[32];
      std::snprintf(cell, sizeof cell, " %.2f%s |", load[static_cast<size_t>(expert)], largest ? "*" : "");
      md << cell;
      shares.push_back(load[static_cast<size_t>(expert)]);
    }
    md << "\n";
    own[domain] = shares;
    ++expert;
  }
  results["routing_own_share"] = own;
}

}  // namespace

void score_into_report(const std::string& recipe_path, int64_t eval_windows, const PipelineRecipe& p,
                       const std::map<std::string, std::string>& corpus, const std::string& out, Report& report) {
  json& results = report.results;
  std::ostringstream& md = report.md;
  // Scores of every model on every domain, and the MoE's routing per domain.
  log_info("scoring every model on every domain");
  const int64_t T = p.experts["train"].value("seq_len", int64_t{128});
  std::map<std::string, TokenDataset> val;
  for (const auto& [name, file] : corpus) val[name] = TokenDataset::from_prepared(out + "/data/" + name, "val", T + 1);
  std::vector<std::pair<std::string, std::string>> models = {{p.base_from.empty() ? "base" : "base (" + p.base_from + ")", out + "/base"}};
  if (p.instruct_stage) models.push_back({"instruct", out + "/instruct"});
  for (const auto& [name, file] : corpus) models.push_back({"expert " + name, out + "/expert_" + name});
  models.push_back({"MoE (composed)", out + "/moe"});
  models.push_back({"MoE after MiX", out + "/moe_mix"});
  models.push_back({"student (distilled)", out + "/student"});
  models.push_back({"student (no distillation)", out + "/student_plain"});
  std::map<std::string, std::vector<std::vector<double>>> routing;
  md << "# smelt pipeline: " << recipe_path << "\n\nValidation perplexity per domain (lower is better; " << std::min<int64_t>(eval_windows, 1 << 30)
     << " windows of " << T << " tokens per domain):\n\n| model | parameters (active) |";
  for (const auto& [domain, file] : corpus) md << " " << domain << " |";
  md << " mixed |\n|---|---|";
  for (size_t i = 0; i <= corpus.size(); ++i) md << "---|";
  md << "\n";
  for (const auto& [label, dir] : models) {
    const Transformer m = load_model_dir(dir, DType::F32, Transformer::Experts::InMemory, Device::parse(p.device));  // scored where trained
    const bool moe = label == "MoE after MiX";
    const Scores s = score(m, val, T, eval_windows, moe ? &routing : nullptr);
    double mixed = 0;
    md << "| " << label << " | " << m.config().parameter_count() << " (" << m.config().active_parameter_count() << ") |";
    json row = json::object();
    for (const auto& [domain, loss] : s.loss) {
      md << " " << one_decimal(std::exp(loss)) << " |";
      row[domain] = std::exp(loss);
      mixed += loss / static_cast<double>(s.loss.size());
    }
    md << " " << one_decimal(std::exp(mixed)) << " |\n";
    row["mixed"] = std::exp(mixed);
    row["parameters"] = m.config().parameter_count();
    row["active_parameters"] = m.config().active_parameter_count();
    results[label] = row;
  }
  fs::create_directories(out + "/report");
  if (!routing.empty()) results["routing"] = routing;
  write_composition_section(md, results, corpus);
  write_training_section(md, results, out, corpus);
  md << "\n## Routing of the MoE after MiX\n\nShare of each domain's token-slots per expert (expert i was fine-tuned on the i-th domain in this order:";
  for (const auto& [domain, file] : corpus) md << " " << domain;
  md << ").\n\n";
  if (!routing.empty()) {
    const size_t layers = routing.begin()->second.size();
    for (size_t l = 0; l < layers; ++l) {
      std::vector<std::vector<double>> grid;
      std::vector<std::string> rows, cols;
      for (const auto& [domain, load] : routing) {
        grid.push_back(load[l]);
        rows.push_back(domain);
      }
      for (size_t e = 0; e < grid[0].size(); ++e) cols.push_back("expert " + std::to_string(e));
      const std::string name = "routing_layer" + std::to_string(l) + ".svg";
      write_file_atomic(out + "/report/" + name, svg_heatmap(grid, rows, cols, "Layer " + std::to_string(l) + ": domain → expert", "expert"));
      md << "![layer " << l << "](report/" << name << ")\n\n";
    }
  }
}

}  // namespace smelt::tools
