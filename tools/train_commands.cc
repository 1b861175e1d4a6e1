// smelt train, sft and distill: their options, and the refusals of options a run would not use
// (the run itself: cmd_train.cc).
#include <utility>

#include "io/prepared_data.h"
#include "tools/commands.h"
#include "tools/device_option.h"
#include "tools/runners.h"

namespace smelt::tools {

namespace {

void add_run_options(CLI::App* cmd, TrainArgs* args) {
  cmd->add_option("--resume", args->resume, "Continue a run from a checkpoint directory (OUT.checkpoints/step-N)");
  cmd->add_option("--data", args->data, "Training text file, or a directory from smelt data prepare")->required();
  cmd->add_option("--val", args->val, "Validation text file or prepared directory (default: the data's val split, or the end of a text file)");
  cmd->add_option("--val-fraction", args->val_fraction, "Fraction of --data held out when --val is not given")->capture_default_str();
  cmd->add_option("--out", args->out, "Output model directory (written atomically)")->required();
  // Given, an override must be a value the recipe field accepts (unset, they keep the recipe's).
  cmd->add_option("--steps", args->steps, "Override train.steps from the recipe")->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  cmd->add_option("--seed", args->seed, "Override train.seed from the recipe")->check(CLI::Range(int64_t{0}, int64_t{1} << 62));
  cmd->add_option("--precision", args->precision,
                  "Override train.precision: f32, or bf16 (GEMM operands rounded to bf16, f32 accumulation and master weights)");
  cmd->add_option("--expert-parallel", args->expert_parallel,
                  "Override train.expert_parallel: ranks that share each MoE layer's experts (= the mpirun ranks, or 1)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--zero-stage", args->zero_stage, "Override train.zero_stage: 1 shards AdamW's moments over the mpirun ranks")
      ->check(CLI::Range(int64_t{0}, int64_t{1}));
  cmd->add_option("--save-every", args->save_every, "Write a checkpoint to OUT.checkpoints/step-N every N steps (0 = never)");
  cmd->add_option("--keep-checkpoints", args->keep_checkpoints, "Checkpoints to keep (oldest removed first)")->capture_default_str();
  cmd->add_option("--stop-after", args->stop_after, "Stop after this step with a checkpoint instead of finishing the run");
  cmd->add_flag("--json", args->json, "Print per-step metrics and the summary as JSON lines on stdout");
  add_threads_option(*cmd, args->threads);
  add_device_option(*cmd, args->device);
}

// The options every training command shares that a run can leave unused.
void refuse_unused_run_options(const CLI::App& cmd, const TrainArgs& a) {
  refuse_unused(cmd, "--seed", a.resume.empty(), "on --resume (the checkpoint's random state carries on)");
  refuse_unused(cmd, "--val-fraction", a.resume.empty(), "on --resume (the checkpoint's split carries on)");
  refuse_unused(cmd, "--val-fraction", a.val.empty() && !is_prepared_data(a.data), "with --val or a prepared --data (it has its own val split)");
  refuse_unused(cmd, "--keep-checkpoints", a.save_every > 0 || a.stop_after > 0, "without --save-every or --stop-after (no checkpoints are written)");
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand("train", "Train a model from a recipe on text or token shards (from scratch, or continue one with --init)");
  cmd->add_option("--config", args->config, "Recipe JSON: {\"model\": {HF config fields}, \"train\": {...}}");
  cmd->add_option("--init", args->init, "Start from this model directory instead of a fresh model (the recipe then has no \"model\")");
  add_run_options(cmd, args.get());
  cmd->callback([args, cmd] {
    refuse_unused_run_options(*cmd, *args);
    args->command_line = true;
    run_train(*args);
  });
}

void add_sft_command(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  args->sft = true;
  CLI::App* cmd = app.add_subcommand("sft", "Instruct-tune a model on conversations (chat template, loss on assistant turns, packed without cross-talk)");
  cmd->add_option("--model", args->init, "Model directory with a tokenizer.json (not with --resume: the checkpoint holds the model)");
  cmd->add_option("--config", args->config, "Recipe with only a \"train\" section (default: 200 steps of 8 sequences, lr 3e-4)");
  cmd->add_option("--replay", args->replay,
                  "Pretraining text (file or prepared directory) mixed into every batch, so the model keeps what it could read");
  cmd->add_option("--replay-fraction", args->replay_fraction,
                  "The replayed text's share of the loss (and its rows beside each batch_size conversations: this share of them)")
      ->capture_default_str();
  add_run_options(cmd, args.get());
  cmd->callback([args, cmd] {
    SMELT_CHECK(!args->init.empty() || !args->resume.empty(), "smelt sft needs --model DIR, or --resume of an sft checkpoint (which holds the model)");
    SMELT_CHECK(args->init.empty() || args->resume.empty(), "--model and --resume exclude each other: the checkpoint holds the model");
    for (const char* replay : {"--replay", "--replay-fraction"})
      refuse_unused(*cmd, replay, args->resume.empty(), "on --resume (the checkpoint's replay carries on)");
    refuse_unused(*cmd, "--replay-fraction", !args->replay.empty(), "without --replay");
    refuse_unused_run_options(*cmd, *args);
    args->command_line = true;
    run_train(*args);
  });
}

void add_distill_command(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand("distill", "Train a student on a frozen teacher's next-token distributions (online or from a top-K cache)");
  cmd->add_option("--teacher", args->teacher, "Teacher model directory (frozen, no gradients; a resumed run reads it from its checkpoint)");
  cmd->add_option("--student", args->init, "Start the student from this model directory (the recipe then has only \"train\")");
  cmd->add_option("--student-config,--config", args->config, "Recipe JSON: the student's \"model\" (unless --student) and \"train\"");
  cmd->add_option("--loss", args->distill_loss, "fkl, rkl, jsd, skl or tvd")->capture_default_str();
  cmd->add_option("--temperature", args->temperature, "Softmax temperature of both distributions")->capture_default_str();
  cmd->add_option("--alpha", args->alpha, "Weight of the distillation loss (1 − alpha on the data's next tokens)")->capture_default_str();
  cmd->add_option("--beta", args->beta, "jsd mixture weight (default 0.5) or skl skew (default 0.1)");
  cmd->add_option("--teacher-topk", args->teacher_topk, "Cache the teacher's top-K predictions once and train from them (0 = online)")
      ->capture_default_str();
  cmd->add_option("--cache", args->cache, "Directory of the top-K cache (made if absent, reused if it matches)");
  cmd->add_option("--hidden-loss", args->hidden_loss, "Also match hidden states layer by layer: mse (relative) or cosine; a learned projection bridges different widths");
  cmd->add_option("--hidden-weight", args->hidden_weight, "Weight of the hidden-state loss")->capture_default_str();
  cmd->add_option("--student-init", args->student_init,
                  "scratch, or teacher: copy a subset of the teacher's layers (experts merged by averaging) into the student config's shape")
      ->capture_default_str();
  cmd->add_option("--student-layers", args->student_layers, "Teacher layers for --student-init teacher, e.g. 0,3 (default: evenly spaced)")
      ->delimiter(',');
  add_run_options(cmd, args.get());
  cmd->callback([args, cmd] {
    SMELT_CHECK(!args->teacher.empty() || !args->resume.empty(), "smelt distill needs --teacher DIR (or --resume of a distillation checkpoint)");
    const std::pair<const char*, const char*> settings[] = {{"--loss", "loss"},           {"--temperature", "temperature"},
                                                            {"--alpha", "alpha"},         {"--beta", "beta"},
                                                            {"--teacher-topk", "teacher_topk"}, {"--cache", "cache"},
                                                            {"--hidden-loss", "hidden_loss"}, {"--hidden-weight", "hidden_weight"}};
    args->distill_given.emplace();
    for (const auto& [option, key] : settings)
      if (cmd->count(option) > 0) args->distill_given->insert(key);
    if (!args->resume.empty()) {  // a resumed distillation: the checkpoint holds its settings
      for (const auto& [option, key] : settings)
        refuse_unused(*cmd, option, !args->teacher.empty(), "on a resumed distillation without --teacher (the checkpoint's settings are used; give --teacher to have them checked)");
      for (const char* fresh : {"--student-init", "--student-layers", "--student", "--student-config"})
        refuse_unused(*cmd, fresh, false, "on --resume (it shapes a new student; the checkpoint holds the student)");
      refuse_unused_run_options(*cmd, *args);
    args->command_line = true;
      run_train(*args);
      return;
    }
    refuse_unused(*cmd, "--hidden-weight", !args->hidden_loss.empty(), "without --hidden-loss");
    for (const char* fresh : {"--student-init", "--student-layers"})
      refuse_unused(*cmd, fresh, args->init.empty(), "with --student (the student is that model)");
    if (args->alpha == 0 && args->hidden_loss.empty())  // nothing learns from the teacher: it is not run
      for (const char* teacher_side : {"--loss", "--temperature", "--beta", "--teacher-topk", "--cache"})
        refuse_unused(*cmd, teacher_side, false, "with --alpha 0 and no --hidden-loss (the teacher is not run)");
    refuse_unused_run_options(*cmd, *args);
    args->command_line = true;
    refuse_unused(*cmd, "--cache", args->teacher_topk > 0, "without --teacher-topk K (an online teacher keeps no cache)");
    refuse_unused(*cmd, "--beta", args->distill_loss == "jsd" || args->distill_loss == "skl", "with --loss " + args->distill_loss + " (jsd and skl have one)");
    run_train(*args);
  });
}

}  // namespace smelt::tools
