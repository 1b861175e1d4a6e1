// smelt plan: memory per rank and step time of a recipe on a cluster, on paper (no model is
// built, nothing runs): data parallel, with ZeRO-1, and expert parallel, side by side.
#include <cstdio>
#include <string>

#include "io/checkpoint.h"
#include "io/config_json.h"
#include "io/json_reader.h"
#include "optim/parallel_plan.h"
#include "tools/commands.h"

namespace smelt::tools {
namespace {

struct PlanArgs {
  std::string config, model;
  ClusterSpec cluster;
  bool json = false;
};

std::string mib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", bytes / (1024.0 * 1024.0));
  return buf;
}

void print_table(const ModelConfig& mc, const TrainConfig& tc, const ClusterSpec& cl, const std::vector<PlanRow>& rows) {
  const ParameterSplit p = split_parameters(mc);
  std::printf("model: %ld parameters (%ld active per token, %ld in routed experts)\n", static_cast<long>(p.total),
              static_cast<long>(mc.active_parameter_count()), static_cast<long>(p.experts));
  std::printf("global batch: %ld × %ld sequences of %ld tokens per step; %ld ranks%s; links %.0f Gbit/s within a node, %.0f between; "
              "%.3g TFLOP/s per rank\n",
              static_cast<long>(tc.batch_size), static_cast<long>(tc.grad_accum), static_cast<long>(tc.seq_len), static_cast<long>(cl.ranks),
              cl.ranks_per_node > 0 ? (" (" + std::to_string(cl.ranks_per_node) + " per node)").c_str() : " (one node)", cl.node_gbps,
              cl.link_gbps, cl.tflops_per_rank);
  std::printf("%-24s %10s %10s %10s %12s %10s %11s %9s %9s\n", "per rank (MiB, s)", "weights", "gradients", "adam", "activations",
              "total", "compute s", "comm s", "step s");
  for (const PlanRow& r : rows) {
    std::printf("%-24s %10s %10s %10s %12s %10s %11.4g %9.4g %9.4g%s\n", r.layout.c_str(), mib(r.weight_bytes).c_str(),
                mib(r.grad_bytes).c_str(), mib(r.adam_bytes).c_str(), mib(r.activation_bytes).c_str(), mib(r.total_bytes()).c_str(),
                r.compute_seconds, r.comm_seconds, r.step_seconds(), r.runs_here ? "" : ("   (not this job: " + r.note + ")").c_str());
  }
}

void run_plan(const PlanArgs& a) {
  Recipe recipe = read_recipe(a.config);
  SMELT_CHECK(!recipe.has_model || a.model.empty(), a.config, ": has a \"model\" section but --model ", a.model,
              " gives the model too; remove one of them");
  if (!a.model.empty()) recipe.model = read_model_dir_config(a.model);
  SMELT_CHECK(recipe.has_model || !a.model.empty(), a.config, ": no \"model\" section; give --model DIR (or a .gguf) for the model");
  const std::vector<PlanRow> rows = plan_training(recipe.model, recipe.train, a.cluster);
  if (!a.json) return print_table(recipe.model, recipe.train, a.cluster, rows);
  json out = json::array();
  for (const PlanRow& r : rows)
    out.push_back({{"layout", r.layout}, {"runs", r.runs_here}, {"note", r.note}, {"weight_bytes", r.weight_bytes},
                   {"grad_bytes", r.grad_bytes}, {"adam_bytes", r.adam_bytes}, {"activation_bytes", r.activation_bytes},
                   {"total_bytes", r.total_bytes()}, {"compute_s", r.compute_seconds}, {"comm_bytes", r.comm_bytes},
                   {"comm_s", r.comm_seconds}, {"step_s", r.step_seconds()}});
  std::printf("%s\n", json({{"ranks", a.cluster.ranks}, {"parameters", recipe.model.parameter_count()}, {"layouts", out}}).dump().c_str());
}

}  // namespace

void add_plan_command(CLI::App& app) {
  auto a = std::make_shared<PlanArgs>();
  CLI::App* cmd = app.add_subcommand("plan", "Memory per rank and step time of a recipe on N ranks, on paper (DP, ZeRO-1, expert parallel)");
  cmd->add_option("--config", a->config, "Recipe JSON (its \"model\" and \"train\")")->required();
  cmd->add_option("--model", a->model, "Take the model from this directory or .gguf instead of the recipe's \"model\"");
  cmd->add_option("--ranks", a->cluster.ranks, "Ranks (processes, or GPUs) in the job")->required()->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--gpus-per-node", a->cluster.ranks_per_node, "Ranks per node (0: all on one node)")->capture_default_str();
  cmd->add_option("--expert-parallel", a->cluster.expert_parallel, "Ranks sharing out each copy of the experts (default: all)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  cmd->add_option("--link-gbps", a->cluster.link_gbps, "Bandwidth between nodes per rank, Gbit/s")->capture_default_str();
  cmd->add_option("--node-gbps", a->cluster.node_gbps, "Bandwidth within a node per rank, Gbit/s")->capture_default_str();
  cmd->add_option("--tflops-per-rank", a->cluster.tflops_per_rank,
                  "Sustained training TFLOP/s of one rank (default: one CPU core, ~50 GFLOP/s measured here)")
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "Print the plan as one JSON line");
  cmd->callback([a] { run_plan(*a); });
}

}  // namespace smelt::tools
