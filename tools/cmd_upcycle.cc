// smelt upcycle: dense model → MoE model that reproduces it before training.
#include <cstdio>
#include <filesystem>
#include <map>

#include "io/checkpoint.h"
#include "io/files.h"
#include "io/json_reader.h"
#include "models/upcycle.h"
#include "tools/commands.h"
#include "tools/device_option.h"
#include "tools/data_source.h"

namespace smelt::tools {
namespace {

struct UpcycleArgs {
  std::string model, out, scoring = "softmax";
  UpcycleOptions options;
  int64_t seed = 0;
  bool json = false;
  std::string device;
};

void run_upcycle(UpcycleArgs a) {
  check_output_dir(a.out);
  check_output_apart("--out", a.out, {a.model});
  a.options.scoring_func = a.scoring;
  a.options.seed = static_cast<uint64_t>(a.seed);
  a.options.validate();  // before loading anything
  Transformer dense = load_model_dir(a.model, DType::F32, Transformer::Experts::InMemory, chosen_device(a.device));  // the noise is drawn there
  Transformer moe = upcycle(dense, a.options);
  save_model_dir(a.out, moe, carried_model_files(a.model));
  const ModelConfig& c = moe.config();
  json out = {{"out", a.out},
              {"experts", c.num_local_experts},
              {"top_k", c.num_experts_per_tok},
              {"moe_layers_every", c.decoder_sparse_step},
              {"shared_experts", a.options.shared_experts},
              {"noise", a.options.noise},
              {"dense_parameters", dense.config().parameter_count()},
              {"parameters", c.parameter_count()},
              {"active_parameters", c.active_parameter_count()}};
  if (a.json) std::printf("%s\n", out.dump().c_str());
  else
    std::printf("upcycled %s → %s: %ld experts, top-%ld, every %ld layer(s); %ld parameters (%ld active per token)\n",
                a.model.c_str(), a.out.c_str(), static_cast<long>(c.num_local_experts), static_cast<long>(c.num_experts_per_tok),
                static_cast<long>(c.decoder_sparse_step), static_cast<long>(c.parameter_count()),
                static_cast<long>(c.active_parameter_count()));
}

}  // namespace

void add_upcycle_command(CLI::App& app) {
  auto a = std::make_shared<UpcycleArgs>();
  CLI::App* cmd = app.add_subcommand("upcycle", "Turn a dense model into an MoE model (experts = copies of the dense FFN)");
  cmd->add_option("--model", a->model, "Dense model directory")->required();
  cmd->add_option("--out", a->out, "Output MoE model directory")->required();
  cmd->add_option("--experts", a->options.experts, "Experts per MoE layer")->capture_default_str();
  cmd->add_option("--top-k", a->options.top_k, "Experts per token")->capture_default_str();
  cmd->add_option("--every", a->options.every, "Make every N-th layer MoE (the rest stay dense)")->capture_default_str();
  cmd->add_option("--noise", a->options.noise, "Gaussian noise on expert copies, relative to each weight's std (0 = exact)")
      ->capture_default_str();
  cmd->add_option("--shared-experts", a->options.shared_experts, "Always-on copies of the dense FFN")->capture_default_str();
  cmd->add_option("--scoring", a->scoring, "Router scores: softmax or sigmoid")->capture_default_str();
  cmd->add_option("--seed", a->seed, "Seed for the noise")->capture_default_str();
  cmd->add_flag("--json", a->json, "Print the result as JSON");
  add_device_option(*cmd, a->device);
  cmd->callback([a, cmd] {
    refuse_unused(*cmd, "--seed", a->options.noise > 0, "with --noise 0 (the experts are exact copies)");
    run_upcycle(*a);
  });
}

}  // namespace smelt::tools
