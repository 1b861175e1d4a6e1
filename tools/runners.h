// The commands that other commands run in-process (smelt pipeline chains them): their arguments
// as structs, and the functions the command-line callbacks call.
#pragma once
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "models/compose.h"

namespace smelt::tools {

// smelt train / sft / distill.
struct TrainArgs {
  std::string config, data, val, out, init, resume;
  double val_fraction = 0.05;
  int64_t steps = 0;
  int64_t expert_parallel = 0, zero_stage = -1;  // overrides of the recipe's (unset: 0 and -1)
  int64_t seed = -1;
  std::string precision;  // override of train.precision (unset: empty)
  int64_t save_every = 0, keep_checkpoints = 2, stop_after = 0;
  bool json = false;
  int threads = 0;
  std::string device;  // --device (empty: cpu)
  // Distillation (smelt distill): a teacher model, or a cache of its top-K predictions.
  std::string teacher, distill_loss = "fkl", cache;
  double temperature = 1.0, alpha = 0.5, beta = 0;  // beta 0: the loss's default
  int64_t teacher_topk = 0;
  std::string hidden_loss;            // "" (none), "mse" or "cosine"
  double hidden_weight = 1.0;
  std::string student_init = "scratch";  // or "teacher": a subset of the teacher's layers, experts merged
  std::vector<int64_t> student_layers;   // teacher layers for "teacher" (default: evenly spaced)
  // The distillation settings the command line gave, by their recorded names ("loss", "beta", ...):
  // on --resume with --teacher those are checked against the checkpoint's and the rest taken
  // from it. Unset (the pipeline): all of them are checked.
  std::optional<std::set<std::string>> distill_given;
  bool sft = false;  // smelt sft: packed conversations that never attend across their boundaries
  // Replay (smelt sft): every micro-batch gets round(batch_size × replay_fraction) more rows of
  // pretraining text from `replay`, weighted to make replay_fraction of the loss, so that
  // instruct tuning keeps what the base model could read.
  std::string replay;
  double replay_fraction = 0.25;
  bool whole_windows = false;  // sample whole windows as distillation does (a like-for-like baseline)
  // Set by the train, sft and distill commands: a checkpoint schedule that writes nothing is then
  // refused (the pipeline's one --save-every may exceed a short stage's steps).
  bool command_line = false;
};

void run_train(const TrainArgs& args);

// smelt compose.
struct ComposeArgs {
  std::string base, out;
  std::vector<std::string> experts, prompts, negatives;
  ComposeOptions options;
  bool shared_expert = false;
  int64_t prompt_windows = 16, seq_len = 128;
  int64_t seed = 0;
  bool json = false;
  int threads = 0;
  std::string device;  // --device (empty: cpu)
};

void run_compose(ComposeArgs args);

}  // namespace smelt::tools
