// smelt pipeline RECIPE.json: base → instruct → one expert per domain → compose (+ MiX) → distil
// (and the same student without distillation, as the baseline),
// each stage a directory under --out. A finished stage (its directory exists: every directory is
// written atomically) is skipped on rerun; a training stage that was interrupted resumes from its
// newest checkpoint. At the end every model is scored on every domain's validation split and
// OUT/report.md shows the table, the parameters and the MoE's routing per domain.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "io/bpe_tokenizer.h"
#include "io/checkpoint.h"
#include "io/config_json.h"
#include "io/corpus.h"
#include "io/files.h"
#include "io/prepared_data.h"
#include "io/run_report.h"
#include "runtime/communicator.h"
#include "runtime/log.h"
#include "tools/commands.h"
#include "tools/data_source.h"
#include "tools/device_option.h"
#include "tools/pipeline_recipe.h"
#include "tools/pipeline_report.h"
#include "tools/runners.h"

namespace smelt::tools {
namespace {

namespace fs = std::filesystem;

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

struct PipelineArgs {
  std::string recipe, out;
  std::vector<std::string> domains;  // NAME=FILE overrides of the recipe's domains
  int64_t eval_windows = 32;
  int threads = 0;
  std::string device;  // --device: overrides the recipe's "device"
};

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
  SMELT_CHECK(a.eval_windows > 0, "--eval-windows must be positive, got ", a.eval_windows);
  SMELT_CHECK(!fs::exists(a.out) || fs::is_directory(a.out), a.out, ": exists and is not a directory (--out names the pipeline's folder)");
  PipelineRecipe p = read_pipeline_recipe(a.recipe, a.domains);
  {
    std::vector<std::string> inputs = {a.recipe, p.instruct_data, p.base_from};
    for (const auto& [name, file] : p.domains) inputs.push_back(file);
    check_output_apart("--out", a.out, inputs);
  }
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
  score_into_report(a.recipe, a.eval_windows, p, corpus, out, report);
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
