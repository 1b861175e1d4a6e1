// smelt moefy: a trained dense model → an MoE model whose experts are groups of the dense FFN's
// neurons (models/moefy.h). With every expert active it computes the dense model; with top-k of
// E it runs a fraction of the FFN per token. Then stage 1's recovery: each layer's router is
// fitted to its experts' output norms and the layer is trained alone to reproduce the dense FFN
// under top-k (optim/moefy_fit.h). The per-layer routing policy (stage 2) comes next.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>

#include "autograd/grad_mode.h"
#include "io/checkpoint.h"
#include "io/config_json.h"
#include "io/files.h"
#include "io/json_reader.h"
#include "io/prepared_data.h"
#include "io/svg_plot.h"
#include "models/moefy.h"
#include "optim/moefy_fit.h"
#include "ops/ops.h"
#include "runtime/log.h"
#include "runtime/thread_pool.h"
#include "tools/commands.h"
#include "tools/device_option.h"
#include "tools/data_source.h"

namespace smelt::tools {
namespace {

struct MoefyArgs {
  std::string model, out, data, val;
  MoefyOptions options;
  LayerFitOptions fit;
  int64_t tokens = 100000, split_tokens = 4096, seq_len = 128, seed = 0, sweep_windows = 32;
  double budget = 0;  // stage 2: per-layer relative error budget (0: keep top-k everywhere)
  bool json = false, sweep = false;
  int threads = 0;
  std::string device;
};

// What the FFNs of layers [first, last) saw and produced on up to `tokens` calibration tokens
// ([N, C] each, per layer); with_outputs false: their inputs only (for the split). One forward
// pass of the dense model serves every layer of the range, so callers group layers as memory
// allows (calibration_group) instead of running the model once per layer.
struct Calibration {
  std::vector<Tensor> inputs, outputs;  // per captured layer
  Tensor first_batch;
};

Calibration calibrate(const Transformer& dense, const TokenDataset& d, int64_t tokens, int64_t T, size_t first, size_t last,
                      bool with_outputs) {
  const int64_t windows = std::min(d.windows(T), std::max<int64_t>(1, (tokens + T - 1) / T));
  SMELT_CHECK(windows >= 1, d.name(), ": fewer than ", T + 1, " tokens; no calibration window");
  std::vector<std::vector<Tensor>> in(last - first), out(last - first);
  Calibration c;
  NoGradGuard no_grad;
  dense.set_capture(true);
  for (int64_t w = 0; w < windows; w += 8) {
    const Batch b = batch_on(d.window_batch(w, std::min<int64_t>(8, windows - w), T), dense.device());
    if (w == 0) c.first_batch = b.ids;
    dense.forward(b.ids);
    for (size_t l = first; l < last; ++l) {
      const Tensor& x = dense.captured().ffn_input[l];
      in[l - first].push_back(ops::reshape(x, {-1, x.size(-1)}).clone());
      if (with_outputs) out[l - first].push_back(ops::reshape(dense.captured().ffn_output[l], {-1, x.size(-1)}).clone());
    }
  }
  dense.set_capture(false);
  for (size_t i = 0; i < last - first; ++i) {
    c.inputs.push_back(ops::cat(in[i], 0));
    if (with_outputs) c.outputs.push_back(ops::cat(out[i], 0));
  }
  return c;
}

// Layers per calibration pass: as many as keep their f32 inputs and outputs within 4 GiB.
size_t calibration_group(const Transformer& dense, int64_t tokens) {
  const double per_layer = 2.0 * static_cast<double>(tokens) * static_cast<double>(dense.config().hidden_size) * 4.0;
  return std::max<size_t>(1, static_cast<size_t>(4.0 * (1u << 30) / per_layer));
}

// Mean validation loss of `model` over `windows` windows, and the mean share of the dense FFN
// each token ran (routed experts by their measured mean count, plus shared neurons).
std::pair<double, double> score(const Transformer& model, const TokenDataset& val, int64_t windows, int64_t T, int64_t dense_ffn) {
  NoGradGuard no_grad;
  const ModelConfig& c = model.config();
  double loss = 0, active = 0;
  int64_t tokens = 0;
  for (int64_t w = 0; w < windows; w += 8) {
    const Batch b = batch_on(val.window_batch(w, std::min<int64_t>(8, windows - w), T), model.device());
    const Tensor logits = model.forward(b.ids);
    const int64_t n = b.ids.numel();
    loss += ops::cross_entropy(ops::reshape(logits, {-1, logits.size(-1)}), ops::reshape(b.targets, {-1})).item() * static_cast<double>(n);
    double ffn = 0;
    for (const auto& [layer, s] : model.moe_stats())
      ffn += (s.mean_active_experts * static_cast<double>(c.expert_size()) + static_cast<double>(c.shared_expert_intermediate_size)) /
             static_cast<double>(dense_ffn);
    active += ffn / static_cast<double>(c.num_hidden_layers) * static_cast<double>(n);
    tokens += n;
  }
  return {loss / static_cast<double>(tokens), active / static_cast<double>(tokens)};
}

// Refuses inconsistent options before any weights or data are read.
void check_moefy_args(MoefyArgs& a) {
  check_output_dir(a.out);
  check_output_apart("--out", a.out, {a.model, a.data, a.val});
  a.options.seed = static_cast<uint64_t>(a.seed);
  SMELT_CHECK(a.tokens > 0 && a.seq_len > 0, "--tokens and --seq-len must be positive");
  SMELT_CHECK(a.sweep_windows > 0, "--sweep-windows must be positive, got ", a.sweep_windows);
  a.options.validate(read_model_dir_config(a.model), a.model);
  const bool needs_data = a.options.split == "coact" || a.options.shared_neurons > 0;
  SMELT_CHECK(!needs_data || !a.data.empty(), a.options.split == "coact" ? "--split coact" : "--shared-neurons", " needs --data (calibration text or a prepared directory)");
  a.fit.seed = static_cast<uint64_t>(a.seed);
  a.fit.validate();
  SMELT_CHECK(a.fit.min_k <= a.options.top_k, "--fit-min-k ", a.fit.min_k, " exceeds --top-k ", a.options.top_k);
  SMELT_CHECK((a.budget == 0 && !a.sweep) || !a.data.empty(), "--budget and --sweep need --data");
  SMELT_CHECK(a.val.empty() || a.sweep, "--val is the held-out text --sweep scores; add --sweep");
  SMELT_CHECK(!a.sweep || !a.val.empty() || a.data.empty() || is_prepared_data(a.data), "--sweep with a text --data needs --val (held-out text to score)");
  SMELT_CHECK(a.budget >= 0, "--budget must be ≥ 0, got ", a.budget);
  SMELT_CHECK(a.fit.steps == 0 || !a.data.empty(), "the layer-wise fit (--fit-steps ", a.fit.steps,
              ") needs --data (calibration text or a prepared directory); --fit-steps 0 only splits");
}

// Exactness: with every expert active the MoE reproduces the dense logits on `ids` (the
// calibration batch, or a fixed one without --data). Returns the largest |Δ logit|.
double max_logit_diff_all_experts(const Transformer& dense, const Transformer& moe, int64_t experts, Tensor ids, int64_t T) {
  if (!ids.defined()) {
    std::vector<int64_t> fixed(T);
    for (int64_t i = 0; i < T; ++i) fixed[i] = (i * 31 + 7) % dense.config().vocab_size;
    ids = Tensor::from_ints(fixed, {1, T}, DType::I64, dense.device());
  }
  NoGradGuard no_grad;
  Transformer all = moe;
  all.set_routing_policy(RoutingPolicy::top_k(experts));
  const std::vector<float> want = dense.forward(ids).to_vector(), got = all.forward(ids).to_vector();
  double max_diff = 0;
  for (size_t i = 0; i < want.size(); ++i) max_diff = std::max(max_diff, static_cast<double>(std::fabs(got[i] - want[i])));
  return max_diff;
}

// Stage 2 for one layer: the cheapest routing policy within --budget, chosen on every 10th
// calibration token. Its choice goes into the layer's record.
std::string choose_policy(MoEBlock& block, const Tensor& inputs, const Tensor& outputs, double budget, size_t layer, json& entry) {
  std::vector<int64_t> every;
  for (int64_t n = 0; n < inputs.size(0); n += 10) every.push_back(n);
  const Tensor sel = Tensor::from_ints(every, {static_cast<int64_t>(every.size())}, DType::I64, inputs.device());
  const PolicyChoice p = choose_layer_policy(block, ops::index_select(inputs, 0, sel), ops::index_select(outputs, 0, sel), budget,
                                             static_cast<int64_t>(layer));
  entry["policy"] = p.policy.spec();
  entry["policy_error"] = p.error;
  entry["policy_mean_experts"] = p.mean_active;
  entry["policy_within_budget"] = p.within_budget;
  log_info("layer " + std::to_string(layer) + ": " + p.policy.str() + " (" + std::to_string(p.mean_active) + " experts per token, error " +
           std::to_string(p.error) + ")");
  return p.policy.spec();
}

struct LayerFits {
  json record = json::array();        // per layer: errors before and after, the chosen policy
  std::vector<std::string> policies;  // per layer, with --budget
  int64_t calibration_tokens = 0;
};

// Stage 1's recovery, layer by layer: each router initialised from its experts' output norms,
// then the layer fitted on its own to its dense FFN under top-k routing (--fit-steps 0 stops
// after the router); with --budget, stage 2's policy. Calibration activations are taken a group
// of layers at a time, as many as --tokens allow in memory.
LayerFits fit_layers(const MoefyArgs& a, const Transformer& dense, Transformer& moe, const TokenDataset& data, int64_t T) {
  LayerFits out;
  const size_t group = calibration_group(dense, a.tokens);
  Calibration calibration;  // of the current group of layers
  size_t group_first = 0;
  for (size_t l = 0; l < moe.num_layers(); ++l) {
    if (l % group == 0) {
      group_first = l;
      calibration = calibrate(dense, data, a.tokens, T, l, std::min(l + group, moe.num_layers()), true);
    }
    const Tensor& inputs = calibration.inputs[l - group_first];
    const Tensor& outputs = calibration.outputs[l - group_first];
    out.calibration_tokens = inputs.size(0);
    MoEBlock& block = *moe.layer(l).moe;
    fit_router_to_expert_norms(block, inputs);
    const LayerFit f = fit_moe_layer(block, inputs, outputs, moe.routing_policies()[l], a.fit);
    log_info("layer " + std::to_string(l) + ": relative error under top-" + std::to_string(a.options.top_k) + " " +
             std::to_string(f.error_before) + " → " + std::to_string(f.error_after) + " (" + std::to_string(out.calibration_tokens) + " tokens)");
    json entry = {{"layer", l}, {"error_before", f.error_before}, {"error_after", f.error_after}};
    if (a.budget > 0) out.policies.push_back(choose_policy(block, inputs, outputs, a.budget, l, entry));
    out.record.push_back(entry);
  }
  return out;
}

// --sweep: perplexity against the share of the FFN run, for every top-k and the chosen per-layer
// policy, on held-out text (--val, else the val split of a prepared --data: a text file's "val"
// would be the calibration text). Adds sweep.json and sweep.svg to `files`.
json routing_sweep(const MoefyArgs& a, const Transformer& dense, const Transformer& moe, bool has_policy, int64_t T,
                   std::map<std::string, std::string>& files) {
  const TokenDataset val = load_eval_data(a.val.empty() ? a.data : a.val, "val", T, model_tokenizer(a.model), a.model);
  const int64_t windows = std::min(a.sweep_windows, val.windows(T));
  const int64_t dense_ffn = dense.config().intermediate_size;
  const double dense_loss = score(dense, val, windows, T, 1).first;
  PlotSeries topk{"top-k", {}, {}}, chosen{"per-layer policy", {}, {}}, reference{"dense", {1.0}, {std::exp(dense_loss)}};
  if (!a.json) {
    std::printf("%-28s %10s %12s\n", "routing", "FFN share", "perplexity");
    std::printf("%-28s %10.3f %12.2f\n", "dense", 1.0, std::exp(dense_loss));
  }
  json sweep = json::array();
  sweep.push_back({{"routing", "dense"}, {"ffn_share", 1.0}, {"perplexity", std::exp(dense_loss)}});
  for (int64_t k = 1; k <= a.options.experts + (has_policy ? 1 : 0); ++k) {
    Transformer m = moe;
    std::string name = "per-layer (--budget)";
    if (k <= a.options.experts) {
      m.set_routing_policy(RoutingPolicy::top_k(k));
      name = "top-k:" + std::to_string(k);
    }
    const auto [loss, share] = score(m, val, windows, T, dense_ffn);
    if (!a.json) std::printf("%-28s %10.3f %12.2f\n", name.c_str(), share, std::exp(loss));
    sweep.push_back({{"routing", name}, {"ffn_share", share}, {"perplexity", std::exp(loss)}});
    PlotSeries& s = k <= a.options.experts ? topk : chosen;
    s.x.push_back(share);
    s.y.push_back(std::exp(loss));
  }
  std::vector<PlotSeries> series = {topk, reference};
  if (!chosen.x.empty()) series.push_back(chosen);
  files["sweep.json"] = sweep.dump(2) + "\n";
  files["sweep.svg"] = svg_line_chart(series, "Perplexity against the share of the FFN each token runs", "FFN share per token",
                                      "validation perplexity");
  return sweep;
}

void run_moefy(MoefyArgs a) {
  apply_threads(a.threads);
  check_moefy_args(a);
  const Transformer dense = load_model_dir(a.model, DType::F32, Transformer::Experts::InMemory, chosen_device(a.device));  // calibration and fits run there
  const int64_t T = std::min(a.seq_len, dense.config().max_position_embeddings);
  std::vector<Tensor> calib;  // the layers' FFN inputs, for co-activation groups and shared neurons
  Tensor check_ids;
  std::optional<TokenDataset> data;
  if (!a.data.empty()) {
    data = load_eval_data(a.data, "train", T, model_tokenizer(a.model), a.model);
    Calibration c = calibrate(dense, *data, std::min(a.tokens, a.split_tokens), T, 0, dense.num_layers(), false);
    calib = c.inputs;
    check_ids = c.first_batch;
  }
  std::vector<std::vector<std::vector<int64_t>>> groups;
  Transformer moe = moefy(dense, a.options, calib, a.model, &groups);
  calib.clear();
  const double max_diff = max_logit_diff_all_experts(dense, moe, a.options.experts, check_ids, T);
  const LayerFits fits = data ? fit_layers(a, dense, moe, *data, T) : LayerFits{};
  if (!fits.policies.empty()) {  // the per-layer policy goes into the model's config.json
    ModelConfig with_policy = moe.config();
    with_policy.routing_policies = fits.policies;
    moe = Transformer::from_tensors(with_policy, moe.state_dict(), "moefy");
  }
  const ModelConfig& c = moe.config();
  const int64_t ffn_dense = 3 * dense.config().hidden_size * dense.config().intermediate_size * dense.config().num_hidden_layers;
  const int64_t ffn_active = 3 * c.hidden_size * (c.num_experts_per_tok * c.expert_size() + c.shared_expert_intermediate_size) * c.num_hidden_layers;
  const json record = {{"source", a.model}, {"experts", a.options.experts}, {"top_k", a.options.top_k}, {"split", a.options.split},
                       {"shared_neurons", a.options.shared_neurons}, {"seed", a.seed}, {"calibration_tokens", fits.calibration_tokens},
                       {"fit_steps", a.fit.steps}, {"fit_lr", a.fit.lr}, {"fit_min_k", a.fit.min_k}, {"budget", a.budget},
                       {"layer_fit", fits.record}, {"neuron_groups", groups}};
  std::map<std::string, std::string> files = carried_model_files(a.model);
  files["moefy.json"] = record.dump(2) + "\n";
  const json sweep = a.sweep ? routing_sweep(a, dense, moe, !fits.policies.empty(), T, files) : json::array();
  save_model_dir(a.out, moe, files);
  const json out = {{"out", a.out}, {"experts", a.options.experts}, {"top_k", a.options.top_k}, {"split", a.options.split},
                    {"parameters", c.parameter_count()}, {"active_parameters", c.active_parameter_count()},
                    {"dense_parameters", dense.config().parameter_count()}, {"ffn_parameters_dense", ffn_dense},
                    {"ffn_parameters_active", ffn_active}, {"max_logit_diff_all_experts", max_diff}, {"layer_fit", fits.record},
                    {"calibration_tokens", fits.calibration_tokens}, {"routing_policies", fits.policies}, {"sweep", sweep}};
  if (a.json) std::printf("%s\n", out.dump().c_str());
  else
    std::printf("moefied %s → %s: %ld experts (%s split), top-%ld runs %.0f %% of the FFN; every expert active: max |Δ logit| %.2g\n",
                a.model.c_str(), a.out.c_str(), static_cast<long>(a.options.experts), a.options.split.c_str(), static_cast<long>(a.options.top_k),
                100.0 * static_cast<double>(ffn_active) / static_cast<double>(ffn_dense), max_diff);
}

}  // namespace

void add_moefy_command(CLI::App& app) {
  auto a = std::make_shared<MoefyArgs>();
  CLI::App* cmd = app.add_subcommand("moefy", "Split a dense model's FFNs into experts (MoEfication; exact with every expert active)");
  cmd->add_option("--model", a->model, "Dense model directory")->required();
  cmd->add_option("--out", a->out, "Output MoE model directory")->required();
  cmd->add_option("--experts", a->options.experts, "Experts per layer (must divide the routed FFN width)")->capture_default_str();
  cmd->add_option("--top-k", a->options.top_k, "Experts per token")->capture_default_str();
  cmd->add_option("--split", a->options.split, "kmeans (neuron weights), coact (co-activation on --data) or random")->capture_default_str();
  cmd->add_option("--shared-neurons", a->options.shared_neurons, "Most active neurons (on --data) kept as an always-on shared expert")
      ->capture_default_str();
  cmd->add_option("--data", a->data, "Calibration text file or prepared directory (needed by coact and --shared-neurons)");
  cmd->add_flag("--unit-weights", a->options.unit_weights,
                "Routers only select: chosen experts' outputs are summed unweighted (exact with every expert chosen, whatever the router)");
  cmd->add_option("--val", a->val, "--sweep: held-out text file or prepared directory to score (default: --data's val split)");
  cmd->add_option("--tokens", a->tokens, "Calibration tokens for the layer-wise fit")->capture_default_str();
  cmd->add_option("--split-tokens", a->split_tokens, "Calibration tokens for coact and shared-neuron ranking")->capture_default_str();
  cmd->add_option("--fit-steps", a->fit.steps, "Layer-wise fit steps per layer (0: split and router initialisation only)")
      ->capture_default_str();
  cmd->add_option("--fit-lr", a->fit.lr, "Layer-wise fit learning rate")->capture_default_str();
  cmd->add_option("--fit-batch", a->fit.batch_tokens, "Tokens per layer-wise fit step")->capture_default_str();
  cmd->add_option("--fit-min-k", a->fit.min_k, "Train each step with k drawn from [this, --top-k] (0: always --top-k)")->capture_default_str();
  cmd->add_option("--seq-len", a->seq_len, "Calibration window length")->capture_default_str();
  cmd->add_option("--seed", a->seed, "Seed of the k-means start and the random split")->capture_default_str();
  cmd->add_option("--budget", a->budget, "Stage 2: per layer, the routing policy (top-k or top-p) with the fewest experts whose relative "
                                         "output error stays within this budget (0: top-k everywhere)")->capture_default_str();
  cmd->add_flag("--sweep", a->sweep, "Print and plot (OUT/sweep.svg) validation perplexity against the FFN share per token");
  cmd->add_option("--sweep-windows", a->sweep_windows, "Validation windows for --sweep")->capture_default_str();
  cmd->add_flag("--json", a->json, "Print the result as JSON");
  add_threads_option(*cmd, a->threads);
  add_device_option(*cmd, a->device);
  cmd->callback([a, cmd] {
    refuse_unused(*cmd, "--sweep-windows", a->sweep, "without --sweep");
    for (const char* fit_option : {"--fit-lr", "--fit-batch", "--fit-min-k"})
      refuse_unused(*cmd, fit_option, a->fit.steps > 0, "with --fit-steps 0 (no layer-wise fit)");
    refuse_unused(*cmd, "--split-tokens", a->options.split == "coact" || a->options.shared_neurons > 0, "without --split coact or --shared-neurons");
    run_moefy(*a);
  });
}

}  // namespace smelt::tools
