// smelt train: train a model from a recipe on a text file (byte tokens, or the model's tokenizer)
// or a prepared data directory (token shards).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>

#include "io/files.h"
#include "io/chat.h"
#include "io/checkpoint.h"
#include "io/prepared_data.h"
#include "io/config_json.h"
#include "io/json_reader.h"
#include "io/run_report.h"
#include "models/expert_parallel.h"
#include "models/student_init.h"
#include "ops/backend.h"
#include "ops/cpu/gemm_bf16.h"
#include "ops/ops.h"
#include "optim/data_parallel.h"
#include "runtime/communicator.h"
#include "runtime/log.h"
#include "runtime/thread_pool.h"
#include "tools/commands.h"
#include "tools/data_source.h"
#include "tools/device_option.h"
#include "tools/runners.h"
#include "tools/train_distill.h"

namespace smelt::tools {
namespace {


// smelt sft without --config: a short, gentle fine-tune at the length the model was trained on.
Recipe default_sft_recipe(const std::string& model_dir) {
  Recipe r;
  r.train.steps = 200;
  r.train.batch_size = 8;
  r.train.lr = 3e-4;
  r.train.min_lr = 3e-5;
  r.train.warmup_steps = 10;
  r.train.eval_every = 50;
  r.train.seq_len = 128;
  const std::string recipe = model_dir + "/recipe.json";
  if (std::filesystem::exists(recipe)) {
    const json j = read_json_file(recipe);
    if (j.contains("train") && j["train"].contains("seq_len") && j["train"]["seq_len"].is_number_integer())
      r.train.seq_len = j["train"]["seq_len"].get<int64_t>();
  }
  // A model without a recipe (imported) may have a shorter context than the default window.
  r.train.seq_len = std::min(r.train.seq_len, read_model_dir_config(model_dir).max_position_embeddings);
  return r;
}

json metrics_json(const StepMetrics& m) {
  json j = {{"step", m.step}, {"loss", m.loss}, {"grad_norm", m.grad_norm}, {"lr", m.lr},
            {"tokens", m.tokens}, {"tokens_per_s", m.tokens_per_second}, {"elapsed_s", m.elapsed_seconds}};
  if (m.has_val) j["val_loss"] = m.val_loss;
  if (!m.moe.empty()) {
    j["aux_loss"] = m.aux_loss;
    json layers = json::array();
    for (const auto& [layer, s] : m.moe)
      layers.push_back({{"layer", layer}, {"load", s.load}, {"load_cv", s.load_cv}, {"router_entropy", s.router_entropy},
                        {"dropped_fraction", s.dropped_fraction}, {"active_experts", s.mean_active_experts},
                        {"aux_loss", s.aux_loss}, {"z_loss", s.z_loss}});
    j["moe"] = layers;
  }
  return j;
}

namespace fs = std::filesystem;

std::string checkpoint_dir(const std::string& out, int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08ld", static_cast<long>(step));
  return out + ".checkpoints/" + name;
}

// Keeps the newest `keep` checkpoints of a run (names sort by step).
void prune_checkpoints(const std::string& out, int64_t keep, int64_t written_step) {
  const fs::path root = out + ".checkpoints";
  const std::string written = fs::path(checkpoint_dir(out, written_step)).filename().string();
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0 &&
        e.path().filename().string().find('.') == std::string::npos)
      dirs.push_back(e.path());
  // Oldest first: the steps after the one just written (left by an earlier run, or by the part of
  // a run that a --resume from an earlier step abandoned: pruned by step number alone they
  // outranked, and deleted, the checkpoints this run writes), then the others by step.
  std::sort(dirs.begin(), dirs.end(), [&](const fs::path& x, const fs::path& y) {
    const bool x_stale = x.filename().string() > written, y_stale = y.filename().string() > written;
    return x_stale != y_stale ? x_stale : x.filename().string() < y.filename().string();
  });
  for (size_t i = 0; i + static_cast<size_t>(keep) < dirs.size(); ++i) fs::remove_all(dirs[i]);
}

}  // namespace

// A batch of conversations with rows of replayed text after them, the text's tokens weighted so
// that they make `share` of the batch's loss and the conversations the rest, whatever the number
// of assistant tokens (one host read: that number).
Batch with_replay(const Batch& conversations, Batch text, double share) {
  const double conversation_tokens = ops::sum(loss_token_mask(conversations)).item();
  const double text_tokens = static_cast<double>(text.targets.numel());
  const double weight = conversation_tokens > 0 ? share / (1.0 - share) * conversation_tokens / text_tokens : 1.0;
  text.weights = Tensor::full(text.ids.shape(), static_cast<float>(weight), DType::F32, text.ids.device());
  return concat_rows(conversations, text);
}

// The run's recipe and starting point: a new run (--config), a continued model (--init) or a
// checkpoint (--resume), with the command line's overrides applied and checked.
struct RunStart {
  Recipe recipe;
  std::optional<TrainerState> resumed;
  std::optional<Transformer> initial;
};

// A resumed instruct-tuning run (its checkpoint's "sft" section): conversations packed as smelt
// sft packs them, and the replay the run had. A --replay given again must be the recorded one.
void apply_sft_settings(const json& section, const std::string& source, TrainArgs& a) {
  JsonReader r(section, source);
  const std::string replay = r.string("replay", "");
  const double fraction = r.number("replay_fraction", 0.25);
  r.finish();
  SMELT_CHECK(a.replay.empty() || (same_path(a.replay, replay) && a.replay_fraction == fraction), source, ": \"sft\" replays \"", replay, "\" at ", fraction,
              " but this run asks for \"", a.replay, "\" at ", a.replay_fraction);
  a.sft = true;
  if (a.replay.empty()) a.replay = replay;  // else the same text, spelled as given now
  a.replay_fraction = fraction;
}

RunStart read_run_start(TrainArgs& a) {
  SMELT_CHECK(a.config.empty() != a.resume.empty() || (a.sft && a.resume.empty()), "give exactly one of --config (a new run) and --resume (a checkpoint)");
  SMELT_CHECK(a.resume.empty() || a.init.empty(), "--init and --resume exclude each other: a checkpoint already holds the model");
  SMELT_CHECK(a.save_every >= 0 && a.keep_checkpoints >= 1 && a.stop_after >= 0,
              "--save-every and --stop-after must be ≥ 0, --keep-checkpoints ≥ 1");
  RunStart s;
  std::optional<TrainerState>& resumed = s.resumed;
  if (!a.resume.empty()) resumed = read_trainer_state(a.resume);
  if (resumed && resumed->val_fraction >= 0) a.val_fraction = resumed->val_fraction;  // the run's own split
  if (resumed) a.whole_windows = a.whole_windows || resumed->whole_windows;             // and its batches
  const std::string recipe_path = a.resume.empty() ? a.config : a.resume + "/recipe.json";
  Recipe& recipe = s.recipe;
  recipe = a.sft && a.config.empty() && a.resume.empty() ? default_sft_recipe(a.init) : read_recipe(recipe_path);
  // A recipe.json written by a distillation or an instruct-tuning run records its settings for
  // --resume; as a new run's --config it would silently turn smelt train into that run.
  for (const auto& [section, command] : {std::pair<const json&, const char*>{recipe.distill, "distill"}, {recipe.sft, "sft"}})
    SMELT_CHECK(section.is_null() || !a.resume.empty(), recipe_path, ": has a \"", command, "\" section (a recorded run's settings, read on --resume); for a new run give them to smelt ",
                command, " as options and remove the section");
  if (!recipe.distill.is_null()) apply_distill_settings(recipe.distill, recipe_path, a);
  if (!recipe.sft.is_null()) apply_sft_settings(recipe.sft, recipe_path, a);
  SMELT_CHECK(!a.distill_given || a.resume.empty() || !recipe.distill.is_null(), a.resume,
              ": not a distillation checkpoint (its recipe.json has no \"distill\"); resume it with smelt train");
  SMELT_CHECK(!a.sft || a.resume.empty() || !recipe.sft.is_null(), a.resume,
              ": not an instruct-tuning checkpoint (its recipe.json has no \"sft\"); resume it with smelt train");
  SMELT_CHECK(recipe.has_model || !a.init.empty(), a.config, ": no \"model\" section; add one or start from a model with --init");
  SMELT_CHECK(!recipe.has_model || a.init.empty() || !a.resume.empty(), a.config, ": has a \"model\" section but --init ", a.init,
              " already defines the model; remove one of them");
  std::optional<Transformer>& initial = s.initial;
  if (!a.init.empty() || !a.resume.empty()) {
    initial = load_model_dir(a.resume.empty() ? a.init : a.resume, DType::F32, Transformer::Experts::InMemory, chosen_device(a.device));
    recipe.model = initial->config();
  }
  if (a.steps > 0) recipe.train.steps = a.steps;
  if (a.expert_parallel > 0) recipe.train.expert_parallel = a.expert_parallel;
  if (a.zero_stage >= 0) recipe.train.zero_stage = a.zero_stage;
  if (a.seed >= 0) recipe.train.seed = static_cast<uint64_t>(a.seed);
  if (!a.precision.empty()) {
    recipe.train.precision = a.precision;
    recipe.train.validate();
  }
  if (a.command_line) {
    SMELT_CHECK(a.save_every < recipe.train.steps, "--save-every ", a.save_every, ": the run has ", recipe.train.steps,
                " steps, so no checkpoint would be written (the last step writes the model itself)");
    SMELT_CHECK(a.stop_after < recipe.train.steps, "--stop-after ", a.stop_after, ": the run has ", recipe.train.steps,
                " steps and ends first; lower it or raise --steps");
  }
  SMELT_CHECK(recipe.train.seq_len <= recipe.model.max_position_embeddings, recipe_path.empty() ? "the default sft recipe" : recipe_path, ": train.seq_len (", recipe.train.seq_len,
              ") exceeds model.max_position_embeddings (", recipe.model.max_position_embeddings, ")");
  SMELT_CHECK(a.val_fraction >= 0 && a.val_fraction < 1, "--val-fraction must be in [0, 1), got ", a.val_fraction);
  SMELT_CHECK(!std::filesystem::exists(a.out) || std::filesystem::is_directory(a.out), a.out, ": exists and is not a directory");
  return s;
}

// The finished run: its summary (loss, speed, memory), model card, metrics and recipe written
// beside the model, and printed.
void write_trained_model(const TrainArgs& a, const Recipe& recipe, const TrainingData& data, const Transformer& model,
                         const std::string& metrics_jsonl, const json& recipe_json, const std::string& model_dir,
                         const std::vector<double>& peak_rss_per_rank) {
  const TrainConfig& tc = recipe.train;
  const TokenDataset& train = data.train;
  const TokenDataset& val = data.val;
  json summary = {{"out", a.out}, {"steps", tc.steps}, {"parameters", recipe.model.parameter_count()},
                  {"active_parameters", recipe.model.active_parameter_count()}};
  std::istringstream lines(metrics_jsonl);
  std::string line, last_line;
  while (std::getline(lines, line)) last_line = line;
  json last = json::parse(last_line);
  summary["final_loss"] = last["loss"];
  summary["tokens_per_s"] = last["tokens_per_s"];
  summary["elapsed_s"] = last["elapsed_s"];
  summary["peak_rss_mib"] = peak_rss_mib();
  if (peak_rss_per_rank.size() > 1) {
    summary["ranks"] = peak_rss_per_rank.size();
    summary["peak_rss_mib_per_rank"] = peak_rss_per_rank;
  }
  if (last.contains("val_loss")) {
    summary["val_loss"] = last["val_loss"];
    summary["val_bits_per_byte"] =
        last["val_loss"].get<double>() * static_cast<double>(val.size()) / (static_cast<double>(val.text_bytes()) * std::log(2.0));
  }
  summary["tokens"] = last["tokens"];
  std::map<std::string, std::string> files = data.tokenizer_files;
  json data_info = {{"training data", a.data},
                          {"training tokens", train.size()},
                          {"validation tokens", val.size()},
                          {"tokenizer", data.tokenizer ? "byte-level BPE, " + std::to_string(data.tokenizer->vocab_size()) + " tokens" : "bytes (256)"},
                          {"loss", train.masked() ? "assistant turns only (chat template)" : "every token"},
                          {"started from", model_dir.empty() ? "random initialisation (seed " + std::to_string(tc.seed) + ")" : model_dir}};
  if (!a.teacher.empty())
    data_info["distilled from"] = a.teacher + " (" + a.distill_loss + ", T = " + std::to_string(a.temperature) + ", alpha = " +
                                  std::to_string(a.alpha) + (a.teacher_topk > 0 ? ", cached top-" + std::to_string(a.teacher_topk) : ", online") + ")";
  files["README.md"] = model_card(recipe.model, summary, data_info);
  files["metrics.jsonl"] = metrics_jsonl;
  files["recipe.json"] = recipe_json.dump(2) + "\n";
  files["summary.json"] = summary.dump(2) + "\n";
  save_model_dir(a.out, model, files);
  if (a.json) std::printf("%s\n", summary.dump().c_str());
  else {
    std::printf("trained %ld steps in %s: loss %.4f", static_cast<long>(tc.steps),
                format_duration(summary["elapsed_s"].get<double>()).c_str(), summary["final_loss"].get<double>());
    if (summary.contains("val_loss"))
      std::printf(", validation loss %.4f (%.3f bits per byte)", summary["val_loss"].get<double>(),
                  summary["val_bits_per_byte"].get<double>());
    std::printf(", %.0f tokens/s, peak RSS %.0f MiB\nmodel written to %s\n", summary["tokens_per_s"].get<double>(),
                summary["peak_rss_mib"].get<double>(), a.out.c_str());
  }
}

namespace {

// The run's data: token shards or text (encoded with the starting model's tokenizer when it has
// one). A model imported with its own chat template (ChatML) keeps its tokenizer_config.json.
TrainingData load_run_data(const TrainArgs& a, const Recipe& recipe, const std::string& model_dir) {
  const std::optional<BpeTokenizer> tokenizer = model_dir.empty() ? std::nullopt : model_tokenizer(model_dir);
  TrainingData data = load_training_data(a.data, a.val, a.val_fraction, recipe.train.seq_len, tokenizer,
                                         model_dir.empty() ? a.config : model_dir);
  if (!model_dir.empty()) {
    const std::map<std::string, std::string> carried = carried_model_files(model_dir);
    if (carried.count("tokenizer_config.json")) data.tokenizer_files["tokenizer_config.json"] = carried.at("tokenizer_config.json");
  }
  SMELT_CHECK(recipe.model.vocab_size >= data.train.vocab_size(), model_dir.empty() ? a.config : model_dir, ": model.vocab_size ",
              recipe.model.vocab_size, " is smaller than the ", data.train.vocab_size(), " token ids of ", a.data);
  return data;
}

// --student-init teacher: the student's layers copied from the teacher's (evenly spaced unless
// --student-layers names them, which `a` then records). Returns the teacher itself when
// distillation can use it as loaded: on the CPU in f32; elsewhere distillation() loads it again,
// onto the device and in the run's precision.
std::shared_ptr<const Transformer> init_student_from_teacher(TrainArgs& a, const Recipe& recipe, const Device& device,
                                                             std::optional<Transformer>& initial) {
  SMELT_CHECK(a.init.empty(), "--student and --student-init teacher exclude each other");
  SMELT_CHECK(recipe.has_model, a.config, ": --student-init teacher needs the student's \"model\" section");
  const Transformer teacher_on_host = load_model_dir(a.teacher);  // the student's layers are copied on the host
  const std::vector<int64_t> layers = a.student_layers.empty()
                                          ? evenly_spaced_layers(teacher_on_host.config().num_hidden_layers, recipe.model.num_hidden_layers)
                                          : a.student_layers;
  a.student_layers = layers;
  initial = student_from_teacher(teacher_on_host, recipe.model, layers, a.teacher);
  std::string list;
  for (int64_t l : layers) list += (list.empty() ? "" : ",") + std::to_string(l);
  log_info("student initialised from " + a.teacher + " layers " + list + (teacher_on_host.config().num_local_experts > 0 ? " (experts merged)" : ""));
  if (device.is_cpu() && recipe.train.precision != "bf16") return std::make_shared<const Transformer>(teacher_on_host);
  return nullptr;
}

// smelt sft: the loss on assistant turns only, and conversations separated by end-of-text.
void prepare_conversations(const TrainArgs& a, TrainingData& data) {
  const std::string& model = a.resume.empty() ? a.init : a.resume;
  SMELT_CHECK(data.tokenizer, model, ": smelt sft needs a model with a tokenizer");
  const int32_t end_of_text = end_of_text_id(*data.tokenizer, model);
  SMELT_CHECK(data.train.masked(), a.data, ": no conversations (JSONL with \"messages\" or \"prompt\"/\"response\"); use smelt train for plain text");
  data.train.set_document_separator(end_of_text);
  data.val.set_document_separator(end_of_text);
}

// Replay: pretraining text mixed into instruct tuning, in every micro-batch's last `rows` rows.
struct Replay {
  std::optional<TokenDataset> text;
  int64_t rows = 0;
};

Replay load_replay(const TrainArgs& a, const Recipe& recipe, const TrainingData& data, const std::string& model_dir) {
  Replay r;
  if (a.replay.empty()) return r;
  SMELT_CHECK(a.sft, "--replay mixes pretraining text into instruct tuning: it is an option of smelt sft");
  SMELT_CHECK(a.replay_fraction > 0 && a.replay_fraction < 1, "--replay-fraction must be in (0, 1), got ", a.replay_fraction);
  r.rows = std::max<int64_t>(1, std::llround(static_cast<double>(recipe.train.batch_size) * a.replay_fraction));
  r.text = load_training_data(a.replay, "", 0, recipe.train.seq_len, data.tokenizer, model_dir).train;
  log_info("replay: " + std::to_string(r.rows) + " rows of " + a.replay + " (" + std::to_string(r.text->size()) + " tokens) beside every " +
           std::to_string(recipe.train.batch_size) + " conversations, " + std::to_string(a.replay_fraction) + " of the loss");
  return r;
}

// One line on the model and where it computes, one on the data.
void log_run_setup(const TrainArgs& a, const Recipe& recipe, bool from_init, const Device& device, const TrainingData& data) {
  const Communicator& job = world();
  log_info(std::string(from_init ? "model from " + a.init + ": " : "model: ") + std::to_string(recipe.model.parameter_count()) +
           " parameters (" + std::to_string(recipe.model.active_parameter_count()) + " active per token), " + std::to_string(num_threads()) +
           " threads" + (device.is_cpu() ? "" : " (computing on " + device.str() + ")") +
           (job.size() > 1 ? " × " + std::to_string(job.size()) + " ranks (" + job.backend() + ")" : "") + ", SIMD " + cpu_simd_target() +
           (recipe.train.precision == "bf16" ? std::string(", bf16 GEMMs (") + (cpu_has_bf16_dot() ? "VDPBF16PS" : "rounded operands, f32 arithmetic: no AVX512_BF16 here") + ")" : ""));
  const std::string unit = data.tokenizer ? " tokens" : " bytes";
  log_info("data: " + std::to_string(data.train.size()) + " training" + unit +
           (data.val.size() > 0 ? ", " + std::to_string(data.val.size()) + " validation" + unit : "") +
           (data.train.masked() ? " (loss on assistant turns only)" : ""));
}

// Everything a step needs besides the model's own tensors, and a checkpoint besides the step's
// metrics.
struct RunState {
  Trainer& trainer;
  const NamedTensors& extra;  // distillation's hidden-state projection, trained beside the model
  Philox data_rng;
  std::ostringstream metrics;  // metrics.jsonl so far
  json recipe_json;
};

// Puts a checkpoint's optimizer state, data position, jitter streams and metrics back; returns
// the step to continue from.
int64_t resume_run(const TrainArgs& a, const TrainerState& resumed, int64_t steps, Transformer& model, RunState& run) {
  SMELT_CHECK(resumed.step < steps, a.resume, ": the checkpoint is at step ", resumed.step, ", the run has ", steps,
              " steps; nothing to resume (raise --steps to go further)");
  load_optimizer_state(a.resume, model, run.trainer.optimizer(), run.extra);
  restore_jitter_streams(model, resumed);
  run.data_rng = Philox(resumed.data_seed, resumed.data_offset);
  run.trainer.set_tokens(resumed.tokens);
  run.trainer.set_prior_seconds(resumed.elapsed_seconds);
  run.metrics << resumed.metrics_jsonl;
  log_info("resuming " + a.resume + " at step " + std::to_string(resumed.step));
  return resumed.step;
}

// Writes OUT.checkpoints/step-N and keeps the newest --keep-checkpoints; returns its path. Every
// rank takes the optimizer's state and the model with all experts (collectives when ZeRO-1 or
// expert parallelism shard them); rank 0 writes.
std::string save_run_checkpoint(const TrainArgs& a, const StepMetrics& m, const Transformer& model, const RunState& run,
                                const TrainingData& data) {
  TrainerState st;
  st.step = m.step;
  st.tokens = m.tokens;
  st.elapsed_seconds = m.elapsed_seconds;
  st.data_seed = run.data_rng.seed();
  st.data_offset = run.data_rng.offset();
  st.val_fraction = a.val_fraction;
  st.whole_windows = a.whole_windows;
  for (size_t i = 0; i < model.num_layers(); ++i) st.jitter_offsets.push_back(model.layer(i).moe ? model.layer(i).moe->jitter_offset() : 0);
  st.metrics_jsonl = run.metrics.str();
  st.recipe_json = run.recipe_json.dump(2) + "\n";
  st.extra_files = data.tokenizer_files;
  st.world_size = world().size();
  const std::string dir = checkpoint_dir(a.out, m.step);
  const OptimizerState optimizer_state =
      with_all_experts(run.trainer.optimizer().state(optimizer_parameter_names(model, run.extra)), model);
  const Transformer whole = with_all_experts(model);
  if (world().rank() == 0) {
    save_training_checkpoint(dir, whole, optimizer_state, st, run.extra);
    prune_checkpoints(a.out, a.keep_checkpoints, m.step);
  }
  return dir;
}

// The training batches: random rows, whole windows when distilling (so that a cached teacher's
// predictions line up), or conversations with replayed text after them.
std::function<Batch(int64_t, int64_t)> training_batches(const TrainArgs& a, const TrainConfig& tc, const TrainingData& data,
                                                        const Replay& replay, bool distilling, Philox& rng, const Device& device) {
  return [&a, &tc, &data, &replay, distilling, &rng, device](int64_t, int64_t) {
    if (replay.text)
      return with_replay(batch_on(data.train.random_batch(tc.batch_size, tc.seq_len, rng), device),
                         batch_on(replay.text->random_batch(replay.rows, tc.seq_len, rng), device), a.replay_fraction);
    return batch_on(distilling || a.whole_windows ? data.train.random_window_batch(tc.batch_size, tc.seq_len, rng)
                                                  : data.train.random_batch(tc.batch_size, tc.seq_len, rng),
                    device);
  };
}

}  // namespace

namespace {

// The run's outputs checked before hours of training, not after: --out, and a top-K cache (written
// too unless it exists, and read back).
void check_run_outputs(const TrainArgs& a) {
  check_output_dir(a.out);
  check_output_apart("--out", a.out, {a.data, a.val, a.init, a.resume, a.teacher, a.replay, a.config});
  if (a.teacher_topk == 0) return;
  SMELT_CHECK(!a.cache.empty() || !a.resume.empty(), "--teacher-topk needs --cache DIR (where the teacher's predictions are kept)");
  if (a.cache.empty()) return;  // on --resume: the checkpoint's
  check_output_dir(a.cache, "teacher_cache.json");
  check_output_apart("--cache", a.cache, {a.data, a.val, a.init, a.teacher, a.out});
}

}  // namespace

void run_train(const TrainArgs& args) {
  TrainArgs a = args;
  apply_threads(a.threads);
  const Device device = chosen_device(a.device);
  check_run_outputs(a);
  RunStart start = read_run_start(a);
  Recipe& recipe = start.recipe;
  // A launch that cannot share the global batch is refused before the data is read.
  const Communicator& job = world();
  check_parallel_launch(recipe.train, recipe.model, job.size());

  const std::string model_dir = a.resume.empty() ? a.init : a.resume;
  TrainingData data = load_run_data(a, recipe, model_dir);
  check_distillation(a, data, recipe.model);
  std::shared_ptr<const Transformer> teacher;
  if (init_from_teacher(a) && !start.initial) teacher = init_student_from_teacher(a, recipe, device, start.initial);
  if (a.sft) prepare_conversations(a, data);
  const Replay replay = load_replay(a, recipe, data, model_dir);

  Transformer model = (start.initial ? *start.initial : Transformer::create(recipe.model, recipe.train.seed)).to(device);
  if (recipe.train.precision.empty()) recipe.train.precision = default_precision(device);  // recorded, so a resumed run keeps it
  log_run_setup(a, recipe, start.initial && !a.init.empty(), device, data);
  if (!recipe.train.freeze.empty()) {
    const int64_t frozen = model.freeze(recipe.train.freeze);
    log_info("frozen: " + std::to_string(frozen) + " parameter tensors; training " + std::to_string(model.trainable_parameters().size()));
  }
  const std::optional<Distillation> distill = distillation(a, data, recipe.train, recipe.model, teacher, device);
  const NamedTensors extra = distill ? distill->hidden.parameters() : NamedTensors{};
  if (start.resumed) load_extra_parameters(a.resume, extra);
  Trainer trainer(model, recipe.train, extra);
  if (distill) trainer.set_loss(distill->loss);
  const TrainConfig& tc = recipe.train;
  RunState run{trainer, extra, Philox(tc.seed ^ 0x5eedda7aULL), {}, {{"model", model_config_to_json(recipe.model)}, {"train", train_config_to_json(tc)}}};
  // An instruct-tuning run records what makes it one, so that --resume (smelt sft or smelt train)
  // packs its conversations and replays its text as the run did.
  if (a.sft) run.recipe_json["sft"] = {{"replay", a.replay}, {"replay_fraction", a.replay_fraction}};
  if (distill) run.recipe_json["distill"] = distill_settings(a);
  const int64_t first_step = start.resumed ? resume_run(a, *start.resumed, tc.steps, model, run) : 0;
  const int64_t last_step = a.stop_after > 0 ? std::min(a.stop_after, tc.steps) : tc.steps;
  SMELT_CHECK(last_step > first_step, "--stop-after ", a.stop_after, " is not past the checkpoint's step ", first_step);

  ProgressBar bar("train", last_step - first_step, "steps");
  double last_val = -1;
  std::string last_checkpoint;
  const bool has_val = data.val.size() > 0;
  trainer.run(
      training_batches(a, tc, data, replay, distill.has_value(), run.data_rng, device),
      has_val ? std::function<Batch(int64_t)>(
                    [&](int64_t i) { return batch_on(data.val.eval_batch(i, tc.eval_batches, tc.batch_size, tc.seq_len), device); })
              : std::function<Batch(int64_t)>(),
      [&](const StepMetrics& m) {
        json j = metrics_json(m);
        run.metrics << j.dump() << "\n";
        if (a.json) std::printf("%s\n", j.dump().c_str());
        if (m.has_val) last_val = m.val_loss;
        char suffix[160];
        std::snprintf(suffix, sizeof suffix, "loss %.4f%s | %.0f tok/s", m.loss,
                      last_val >= 0 ? (" val " + std::to_string(last_val).substr(0, 6)).c_str() : "", m.tokens_per_second);
        bar.update(m.step - first_step, suffix);
        const bool stopping = m.step == last_step && last_step < tc.steps;
        if ((a.save_every > 0 && m.step % a.save_every == 0 && m.step < tc.steps) || stopping)
          last_checkpoint = save_run_checkpoint(a, m, model, run, data);
      },
      first_step, last_step);
  bar.finish();
  if (last_step < tc.steps) {
    if (a.json) std::printf("%s\n", json({{"stopped_at", last_step}, {"checkpoint", last_checkpoint}}).dump().c_str());
    else std::printf("stopped after step %ld; resume with: smelt train --resume %s ...\n", static_cast<long>(last_step), last_checkpoint.c_str());
    return;
  }

  // Each rank's peak memory goes into the summary; rank 0 writes it.
  std::vector<double> peak_rss(job.size());
  const double mine = peak_rss_mib();
  world().all_gather(&mine, 1, peak_rss.data(), CommType::F64);
  const Transformer whole = with_all_experts(model);  // a collective under expert parallelism
  if (job.rank() == 0) write_trained_model(a, recipe, data, whole, run.metrics.str(), run.recipe_json, model_dir, peak_rss);
}

}  // namespace smelt::tools
