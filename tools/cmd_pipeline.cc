// smelt pipeline RECIPE.json: base → instruct → one expert per domain → compose (+ MiX) → distil
// (and the same student without distillation, as the baseline),
// each stage a directory under --out. A finished stage (its directory exists: every directory is
// written atomically) is skipped on rerun; a training stage that was interrupted resumes from its
// newest checkpoint. At the end every model is scored on every domain's validation split and
// OUT/report.md shows the table, the parameters and the MoE's routing per domain.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "autograd/grad_mode.h"
#include "io/bpe_tokenizer.h"
#include "io/checkpoint.h"
#include "io/config_json.h"
#include "io/corpus.h"
#include "io/files.h"
#include "io/prepared_data.h"
#include "io/run_report.h"
#include "io/svg_plot.h"
#include "io/token_data.h"
#include "ops/ops.h"
#include "runtime/communicator.h"
#include "runtime/log.h"
#include "tools/commands.h"
#include "tools/data_source.h"
#include "tools/device_option.h"
#include "tools/runners.h"

namespace smelt::tools {
namespace {

namespace fs = std::filesystem;

struct PipelineRecipe {
  int64_t vocab_size = 4096;
  std::map<std::string, std::string> domains;  // name → text file
  std::string instruct_data;
  int64_t max_domain_bytes = 0, max_instruct_examples = 0;  // 0: everything
  double val_fraction = 0.05;
  json base, instruct, experts, mix, distill;  // recipe sections ({"model"?, "train"})
  std::string base_from;       // base: {"from": GGUF or model directory} instead of pretraining
  bool instruct_stage = true;  // false: the experts start from the (pretrained) base
  int64_t top_k = 2;
  std::string gate_init = "hidden";
  bool shared_expert = false;
  std::string distill_loss = "fkl";
  double alpha = 0.5, temperature = 1.0;
  std::string hidden_loss, student_init = "scratch";
  double hidden_weight = 1.0;
  std::vector<int64_t> student_layers;
  int64_t save_every = 50;
  double instruct_replay = 0.5;  // measured on three domain sets (README, "The pipeline on other corpora")
  std::string device = "cpu";    // where the stages train, compose and distil (--device overrides)
};

// A stage's recipe: "train" is required, "model" only where the stage starts a fresh model.
json stage_section(JsonReader& r, const std::string& key, bool with_model) {
  JsonReader s = r.object(key);
  json out = json::object();
  if (with_model) out["model"] = s.raw("model");
  out["train"] = s.raw("train");
  s.finish();
  return out;
}

// `domains_override` ("NAME=FILE" each) replaces the recipe's "domains", so one recipe can be
// judged on other corpora (scripts/experiments/domain_sets.sh).
PipelineRecipe read_pipeline_recipe(const std::string& path, const std::vector<std::string>& domains_override) {
  json j = read_json_file(path);
  if (!domains_override.empty()) {
    json d = json::object();
    for (const std::string& spec : domains_override) {
      const size_t eq = spec.find('=');
      SMELT_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < spec.size(), "--domains: expected NAME=FILE, got \"", spec, "\"");
      SMELT_CHECK(!d.contains(spec.substr(0, eq)), "--domains: ", spec.substr(0, eq), " is named twice");
      d[spec.substr(0, eq)] = spec.substr(eq + 1);
    }
    j["domains"] = d;
  }
  JsonReader r(j, path);
  PipelineRecipe p;
  const bool pretrained = r.has("base") && r.raw("base").is_object() && r.raw("base").contains("from");
  if (pretrained) {
    SMELT_CHECK(!r.has("tokenizer"), r.where("tokenizer"), ": the tokenizer comes from base.from; leave this section out");
  } else {
    JsonReader t = r.object("tokenizer");
    p.vocab_size = t.integer("vocab_size");
    t.finish();
  }
  const json& domains = r.raw("domains");
  SMELT_CHECK(domains.is_object() && domains.size() >= 2, r.where("domains"), ": expected an object of at least two {name: text file}");
  for (auto it = domains.begin(); it != domains.end(); ++it) {
    SMELT_CHECK(it.value().is_string(), r.where("domains"), ".", it.key(), ": expected a file name");
    SMELT_CHECK(it.key().find_first_of("/. ") == std::string::npos && !it.key().empty(), r.where("domains"), ": \"", it.key(),
                "\" cannot name a directory (letters, digits, - and _ only)");
    p.domains[it.key()] = it.value().get<std::string>();
  }
  p.instruct_data = r.string("instruct_data", "");
  p.max_domain_bytes = r.integer("max_domain_bytes", 0);
  p.max_instruct_examples = r.integer("max_instruct_examples", 0);
  p.val_fraction = r.number("val_fraction", p.val_fraction);
  p.save_every = r.integer("save_every", p.save_every);
  p.device = r.string("device", p.device);
  try {
    Device::parse(p.device);  // availability is checked when the run starts
  } catch (const Error& e) {
    SMELT_FAIL(r.where("device"), ": ", e.message());
  }
  if (pretrained) {
    JsonReader b = r.object("base");
    p.base_from = b.string("from");
    b.finish();
    SMELT_CHECK(fs::exists(p.base_from), r.where("base"), ".from: ", p.base_from, " does not exist");
  } else {
    p.base = stage_section(r, "base", true);
  }
  p.instruct_stage = r.has("instruct");
  SMELT_CHECK(p.instruct_stage || pretrained, r.where("instruct"), ": missing (only a pretrained base.from may skip instruct tuning)");
  if (p.instruct_stage) {
    // "replay": the share of each instruct batch's rows replaying the mixed pretraining text
    // (0 turns it off).
    JsonReader i = r.object("instruct");
    p.instruct_replay = i.number("replay", p.instruct_replay);
    SMELT_CHECK(p.instruct_replay >= 0 && p.instruct_replay < 1, i.where("replay"), ": must be in [0, 1), got ", p.instruct_replay);
    json section = json::object({{"train", i.raw("train")}});
    i.finish();
    p.instruct = section;
    SMELT_CHECK(!p.instruct_data.empty(), r.where("instruct_data"), ": missing (the instruct stage trains on it)");
  }
  p.experts = stage_section(r, "experts", false);
  {
    JsonReader c = r.object("compose");
    p.top_k = c.integer("top_k", p.top_k);
    SMELT_CHECK(p.top_k >= 1, c.where("top_k"), ": must be at least 1, got ", p.top_k);
    p.gate_init = c.string("gate_init", p.gate_init);
    // Checked here, not when the compose stage starts after the base, instruct and expert stages.
    SMELT_CHECK(known_gate_init(p.gate_init), c.where("gate_init"), ": must be ", kGateInits, ", got \"", p.gate_init, "\"");
    p.shared_expert = c.boolean("shared_expert", p.shared_expert);
    c.finish();
  }
  p.mix = stage_section(r, "mix", false);
  {
    JsonReader d = r.object("distill");
    p.distill = json::object({{"model", d.raw("model")}, {"train", d.raw("train")}});
    p.distill_loss = d.string("loss", p.distill_loss);
    p.alpha = d.number("alpha", p.alpha);
    p.temperature = d.number("temperature", p.temperature);
    p.hidden_loss = d.string("hidden_loss", p.hidden_loss);
    p.hidden_weight = d.number("hidden_weight", p.hidden_weight);
    p.student_init = d.string("student_init", p.student_init);
    if (d.has("student_layers"))
      for (const json& l : d.raw("student_layers")) {
        SMELT_CHECK(l.is_number_integer(), d.where("student_layers"), ": expected teacher layer indices");
        p.student_layers.push_back(l.get<int64_t>());
      }
    SMELT_CHECK(p.student_init == "scratch" || p.student_init == "teacher", d.where("student_init"), ": expected \"scratch\" or \"teacher\", got \"",
                p.student_init, "\"");
    SMELT_CHECK(p.hidden_loss.empty() || p.hidden_loss == "mse" || p.hidden_loss == "cosine", d.where("hidden_loss"),
                ": expected \"mse\" or \"cosine\", got \"", p.hidden_loss, "\"");
    d.finish();
  }
  r.finish();
  // Every stage recipe is checked now, before any work, with its path in the errors.
  for (const auto& [name, section] : {std::pair<std::string, const json*>{"base", &p.base}, {"instruct", &p.instruct},
                                      {"experts", &p.experts}, {"mix", &p.mix}, {"distill", &p.distill}})
    if (!section->empty()) parse_recipe(section->dump(), path + ": " + name);
  for (const auto& [name, file] : p.domains) SMELT_CHECK(fs::exists(file), path, ": domains.", name, ": ", file, " does not exist");
  SMELT_CHECK(!p.instruct_stage || fs::exists(p.instruct_data), path, ": instruct_data: ", p.instruct_data, " does not exist");
  return p;
}

// Under mpirun every rank walks the stages together: the training stages run on every rank (data
// parallel); the others (copies, tokenizer, data, composition, the report) on rank 0 while the
// rest wait, and what rank 0 sees on disk decides for all.
void on_first_rank(const std::function<void()>& fn) {
  if (world().rank() == 0) fn();
  world().barrier();
}

bool exists_for_all(const std::string& path) {
  int64_t found = fs::exists(path) ? 1 : 0;
  world().broadcast(&found, 1, CommType::I64, 0);
  return found != 0;
}

enum class Ranks { First, All };

// Runs `fn` unless `dir` already exists (a finished stage).
void stage(const std::string& name, const std::string& dir, const std::function<void()>& fn, Ranks ranks = Ranks::First) {
  if (exists_for_all(dir)) {
    log_info("stage " + name + ": done (" + dir + ")");
    return;
  }
  log_info("stage " + name + " → " + dir);
  if (ranks == Ranks::All) fn();
  else on_first_rank(fn);
}

// The newest checkpoint of a training stage, if an earlier run was interrupted.
std::string newest_checkpoint(const std::string& out) {
  const fs::path root = out + ".checkpoints";
  if (!fs::exists(root)) return "";
  std::vector<std::string> dirs;
  for (const auto& e : fs::directory_iterator(root))
    // Only finished checkpoints: "step-N" exactly (a killed write leaves "step-N.tmp.PID" behind).
    if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0 &&
        e.path().filename().string().find('.') == std::string::npos && fs::exists(e.path() / "trainer_state.json"))
      dirs.push_back(e.path().string());
  std::sort(dirs.begin(), dirs.end());
  return dirs.empty() ? "" : dirs.back();
}

void train_stage(const std::string& out, const std::string& work, const json& recipe, TrainArgs a, int64_t save_every) {
  const std::string recipe_path = work + "/" + fs::path(out).filename().string() + ".recipe.json";
  on_first_rank([&] { write_file_atomic(recipe_path, recipe.dump(2) + "\n"); });
  a.out = out;
  a.save_every = save_every;
  a.keep_checkpoints = 1;
  const std::string resume = newest_checkpoint(out);
  if (!resume.empty()) {
    log_info("resuming " + out + " from " + resume);
    a.resume = resume;
    a.init.clear();
  } else {
    a.config = recipe_path;
  }
  run_train(a);
  on_first_rank([&] { fs::remove_all(out + ".checkpoints"); });
}

std::string capped_copy(const std::string& src, const std::string& dst, int64_t max_bytes, int64_t max_lines) {
  std::string text = read_file(src);
  if (max_bytes > 0 && static_cast<int64_t>(text.size()) > max_bytes) {
    const size_t cut = text.rfind('\n', static_cast<size_t>(max_bytes));
    text.resize(cut == std::string::npos ? static_cast<size_t>(max_bytes) : cut + 1);
  }
  if (max_lines > 0) {
    size_t pos = 0;
    for (int64_t n = 0; n < max_lines && pos < text.size(); ++n) {
      const size_t nl = text.find('\n', pos);
      pos = nl == std::string::npos ? text.size() : nl + 1;
    }
    text.resize(pos);
  }
  write_file_atomic(dst, text);
  return dst;
}

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

struct PipelineArgs {
  std::string recipe, out;
  std::vector<std::string> domains;  // NAME=FILE overrides of the recipe's domains
  int64_t eval_windows = 32;
  int threads = 0;
  std::string device;  // --device: overrides the recipe's "device"
};

// The report's text and its figures as JSON.
struct Report {
  std::ostringstream md;
  json results = json::object();
};

// Scores every stage's model on every domain's validation text, and writes the report's figures
// (training table, loss curves, the MoE's routing heatmaps) under out/report/.
void score_into_report(const PipelineArgs& a, const PipelineRecipe& p, const std::map<std::string, std::string>& corpus,
                       const std::string& out, Report& report) {
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
  md << "# smelt pipeline: " << a.recipe << "\n\nValidation perplexity per domain (lower is better; " << std::min<int64_t>(a.eval_windows, 1 << 30)
     << " windows of " << T << " tokens per domain):\n\n| model | parameters (active) |";
  for (const auto& [domain, file] : corpus) md << " " << domain << " |";
  md << " mixed |\n|---|---|";
  for (size_t i = 0; i <= corpus.size(); ++i) md << "---|";
  md << "\n";
  for (const auto& [label, dir] : models) {
    const Transformer m = load_model_dir(dir, DType::F32, Transformer::Experts::InMemory, Device::parse(p.device));  // scored where trained
    const bool moe = label == "MoE after MiX";
    const Scores s = score(m, val, T, a.eval_windows, moe ? &routing : nullptr);
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

// Each domain's corpus as a capped copy in work/, the instruct conversations likewise, and the
// tokenizer: a pretrained base's own, else one trained on the corpora. Returns domain → copy.
std::map<std::string, std::string> prepare_corpora(const PipelineRecipe& p, const std::string& out, const std::string& work) {
  std::map<std::string, std::string> corpus;
  for (const auto& [name, file] : p.domains) corpus[name] = work + "/" + name + ".txt";
  const std::string tokenizer = out + "/tokenizer.json";
  on_first_rank([&] {
    fs::create_directories(work);
    for (const auto& [name, file] : p.domains) capped_copy(file, corpus[name], p.max_domain_bytes, 0);
    if (p.instruct_stage) capped_copy(p.instruct_data, work + "/instruct.jsonl", 0, p.max_instruct_examples);
    if (!fs::exists(tokenizer) && !p.base_from.empty()) {  // a pretrained model brings its own
      const std::optional<BpeTokenizer> t = model_tokenizer(p.base_from);
      SMELT_CHECK(t, p.base_from, ": base.from has no tokenizer (the pipeline encodes its domains with it)");
      t->save(tokenizer);
    }
    if (!fs::exists(tokenizer)) {
      log_info("stage tokenizer → " + tokenizer);
      std::vector<std::string> texts;
      for (const auto& [name, file] : corpus) texts.push_back(read_file(file));
      BpeTrainOptions o;
      o.vocab_size = p.vocab_size;
      o.special_tokens = BpeTokenizer::default_special_tokens();
      BpeTokenizer::train(std::vector<std::string_view>(texts.begin(), texts.end()), o).save(tokenizer);
    }
  });
  return corpus;
}

// Token shards: data/NAME per domain, data/mixed of all of them, data/instruct.
void prepare_token_shards(const PipelineRecipe& p, const std::map<std::string, std::string>& corpus, const std::string& out,
                          const std::string& work) {
  auto prepare = [&](const std::vector<std::string>& inputs, const std::string& dir) {
    stage("data", dir, [&] {
      PrepareOptions o;
      o.inputs = inputs;
      o.tokenizer = out + "/tokenizer.json";
      o.out = dir;
      o.val_fraction = p.val_fraction;
      prepare_data(o);
    });
  };
  std::vector<std::string> all;
  for (const auto& [name, file] : corpus) {
    prepare({file}, out + "/data/" + name);
    all.push_back(file);
  }
  prepare(all, out + "/data/mixed");
  if (p.instruct_stage) prepare({work + "/instruct.jsonl"}, out + "/data/instruct");
}

// The dense stages: the base model (pretrained here, or taken from base.from) and the instruct
// tune on it. Returns the model the experts start from.
std::string run_dense_stages(const PipelineRecipe& p, const std::string& out, const std::string& work) {
  if (p.base_from.empty()) {
    TrainArgs base;
    base.device = p.device;
    base.data = out + "/data/mixed";
    stage("base", out + "/base", [&] { train_stage(out + "/base", work, p.base, base, p.save_every); }, Ranks::All);
  } else {
    stage("base", out + "/base", [&] { save_model_dir(out + "/base", load_model_dir(p.base_from), carried_model_files(p.base_from)); });
  }
  if (!p.instruct_stage) return out + "/base";
  TrainArgs sft;
  sft.device = p.device;
  sft.sft = true;
  sft.init = out + "/base";
  sft.data = out + "/data/instruct";
  if (p.instruct_replay > 0) {
    sft.replay = out + "/data/mixed";
    sft.replay_fraction = p.instruct_replay;
  }
  stage("instruct", out + "/instruct", [&] { train_stage(out + "/instruct", work, p.instruct, sft, p.save_every); }, Ranks::All);
  return out + "/instruct";
}

// One expert per domain, fine-tuned from `experts_from` on its domain, then composed into the
// MoE (each domain's shards prompt its expert's router row) and trained on the mixture (MiX).
void run_moe_stages(const PipelineRecipe& p, const std::map<std::string, std::string>& corpus, const std::string& experts_from,
                    const std::string& out, const std::string& work) {
  std::vector<std::string> expert_dirs, prompts;
  for (const auto& [name, file] : corpus) {
    TrainArgs e;
    e.device = p.device;
    e.init = experts_from;
    e.data = out + "/data/" + name;
    const std::string dir = out + "/expert_" + name;
    stage("expert " + name, dir, [&] { train_stage(dir, work, p.experts, e, p.save_every); }, Ranks::All);
    expert_dirs.push_back(dir);
    prompts.push_back(out + "/data/" + name);
  }
  stage("compose", out + "/moe", [&] {
    ComposeArgs c;
    c.device = p.device;
    c.base = experts_from;
    c.experts = expert_dirs;
    c.prompts = prompts;
    c.out = out + "/moe";
    c.options.top_k = p.top_k;
    c.options.gate_init = p.gate_init;
    c.shared_expert = p.shared_expert;
    run_compose(c);
  });
  TrainArgs mix;
  mix.device = p.device;
  mix.init = out + "/moe";
  mix.data = out + "/data/mixed";
  stage("mix", out + "/moe_mix", [&] { train_stage(out + "/moe_mix", work, p.mix, mix, p.save_every); }, Ranks::All);
}

// The student distilled from the MoE after MiX, and its twin trained the same way without a
// teacher: what distillation is measured against. A teacher-layer init still needs the teacher,
// at alpha 0.
void run_student_stages(const PipelineRecipe& p, const std::string& out, const std::string& work) {
  TrainArgs d;
  d.device = p.device;
  d.teacher = out + "/moe_mix";
  d.data = out + "/data/mixed";
  d.distill_loss = p.distill_loss;
  d.alpha = p.alpha;
  d.temperature = p.temperature;
  d.hidden_loss = p.hidden_loss;
  d.hidden_weight = p.hidden_weight;
  d.student_init = p.student_init;
  d.student_layers = p.student_layers;
  stage("distill", out + "/student", [&] { train_stage(out + "/student", work, p.distill, d, p.save_every); }, Ranks::All);
  TrainArgs plain;
  plain.device = p.device;
  plain.data = out + "/data/mixed";
  plain.whole_windows = true;
  if (p.student_init == "teacher") {
    plain.teacher = d.teacher;
    plain.alpha = 0;
    plain.student_init = "teacher";
    plain.student_layers = p.student_layers;
  }
  stage("student without distillation", out + "/student_plain",
        [&] { train_stage(out + "/student_plain", work, p.distill, plain, p.save_every); }, Ranks::All);
}

void run_pipeline(const PipelineArgs& a) {
  const auto started = std::chrono::steady_clock::now();
  apply_threads(a.threads);
  PipelineRecipe p = read_pipeline_recipe(a.recipe, a.domains);
  if (!a.device.empty()) p.device = a.device;
  chosen_device(p.device);  // no GPU (or a build without CUDA): refused before any stage runs
  const std::string out = a.out, work = a.out + "/work";
  const std::map<std::string, std::string> corpus = prepare_corpora(p, out, work);
  prepare_token_shards(p, corpus, out, work);
  const std::string experts_from = run_dense_stages(p, out, work);
  run_moe_stages(p, corpus, experts_from, out, work);
  run_student_stages(p, out, work);

  if (world().rank() != 0) return;  // the report is rank 0's
  Report report;
  score_into_report(a, p, corpus, out, report);
  // Wall time of this invocation (stages finished by an earlier run are skipped, not counted).
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  report.results["wall_seconds_this_run"] = wall;
  report.md << "This invocation of `smelt pipeline` ran " << format_duration(wall) << " (stages finished by earlier runs were skipped).\n";
  write_file_atomic(out + "/results.json", report.results.dump(2) + "\n");
  write_file_atomic(out + "/report.md", report.md.str());
  log_info("pipeline finished in " + format_duration(wall));
  std::printf("%s\n", (out + "/report.md").c_str());
}

}  // namespace

void add_pipeline_command(CLI::App& app) {
  auto a = std::make_shared<PipelineArgs>();
  CLI::App* cmd = app.add_subcommand("pipeline", "Base → instruct → domain experts → compose + MiX → distil, from one recipe, with a report");
  cmd->add_option("recipe", a->recipe, "Pipeline recipe JSON (see configs/pipeline.json)")->required();
  cmd->add_option("--out", a->out, "Output directory: one subdirectory per stage, report.md")->required();
  cmd->add_option("--domains", a->domains, "NAME=FILE,...: train and score on these corpora instead of the recipe's domains")->delimiter(',');
  cmd->add_option("--eval-windows", a->eval_windows, "Validation windows per domain in the final scoring")->capture_default_str();
  add_threads_option(*cmd, a->threads);
  add_device_option(*cmd, a->device);
  cmd->callback([a] { run_pipeline(*a); });
}

}  // namespace smelt::tools
