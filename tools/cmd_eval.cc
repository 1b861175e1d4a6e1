// smelt eval: loss, perplexity and bits per byte of a model over a whole text file.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "autograd/grad_mode.h"
#include "io/files.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "io/json_reader.h"
#include "io/prepared_data.h"
#include "tools/data_source.h"
#include "tools/device_option.h"
#include "ops/ops.h"
#include "runtime/log.h"
#include "tools/commands.h"
#include "tools/weights_option.h"
#include "tools/routing_option.h"

namespace smelt::tools {
namespace {

struct EvalArgs {
  std::string model, data, routing, split = "val", save_logits, weights = "f32";
  int64_t seq_len = 0, batch_size = 8, max_batches = 0;
  bool json = false, map_experts = false;
  int threads = 0;
  std::string device;
};

void run_eval(const EvalArgs& a) {
  SMELT_CHECK(a.batch_size > 0, "--batch-size must be positive");
  SMELT_CHECK(a.seq_len >= 0 && a.max_batches >= 0, "--seq-len and --max-batches must be ≥ 0 (0: the default), got ", a.seq_len, " and ",
              a.max_batches);
  if (!a.save_logits.empty()) {
    check_output_file(a.save_logits);
    check_output_apart("--save-logits", a.save_logits, {a.model, a.data});
  }
  apply_threads(a.threads);
  const Device device = chosen_device(a.device);
  Transformer model = load_inference_model(a.model, a.weights, a.map_experts, device);
  apply_routing_option(model, a.routing);
  const ModelConfig& cfg = model.config();
  // Default window: the length the model was trained on (recorded in recipe.json by smelt train),
  // since positions beyond it were never trained.
  int64_t T = std::min<int64_t>(cfg.max_position_embeddings, 256);
  const std::string recipe_path = a.model + "/recipe.json";
  if (std::filesystem::exists(recipe_path)) {
    json recipe = read_json_file(recipe_path);
    if (recipe.contains("train") && recipe["train"].contains("seq_len") && recipe["train"]["seq_len"].is_number_integer())
      T = recipe["train"]["seq_len"].get<int64_t>();
  }
  if (a.seq_len > 0) T = a.seq_len;
  SMELT_CHECK(T <= cfg.max_position_embeddings, "--seq-len ", T, " exceeds the model's max_position_embeddings ", cfg.max_position_embeddings);
  const std::optional<BpeTokenizer> tokenizer = model_tokenizer(a.model);
  TokenDataset data = load_eval_data(a.data, a.split, T, tokenizer, a.model);
  SMELT_CHECK(data.vocab_size() <= cfg.vocab_size, a.data, ": token ids up to ", data.vocab_size() - 1, " do not fit the model's vocabulary of ",
              cfg.vocab_size);
  int64_t windows = data.windows(T);
  int64_t batches = (windows + a.batch_size - 1) / a.batch_size;
  if (a.max_batches > 0) batches = std::min(batches, a.max_batches);
  NoGradGuard no_grad;
  double nats = 0, active = 0, positions = 0;  // positions: every input token, scored or not
  int64_t tokens = 0;
  std::vector<double> layer_active;               // mean active experts per MoE layer
  std::vector<std::vector<double>> layer_load;    // share of token slots per MoE layer and expert
  ProgressBar bar("eval", batches, "batches");
  const auto started = std::chrono::steady_clock::now();
  for (int64_t b = 0; b < batches; ++b) {
    const int64_t first = b * a.batch_size, count = std::min(a.batch_size, windows - first);
    Batch batch = batch_on(data.window_batch(first, count, T), device);
    Tensor logits = model.forward(batch.ids);
    if (b == 0 && !a.save_logits.empty())  // for oracles: the first batch's inputs and logits
      write_safetensors(a.save_logits, {{"input_ids", batch.ids}, {"logits", logits}}, {{"model", a.model}});
    const double loss = ops::cross_entropy(ops::reshape(logits, {-1, cfg.vocab_size}), ops::reshape(batch.targets, {-1})).item();
    int64_t scored = 0;  // targets with a loss (masked ones, -100, are not counted)
    for (int64_t v : batch.targets.to_int_vector()) scored += v >= 0;
    nats += loss * static_cast<double>(scored);
    tokens += scored;
    const double n = static_cast<double>(batch.ids.numel());
    positions += n;
    active += model.mean_active_parameters() * n;
    const auto stats = model.moe_stats();
    layer_active.resize(stats.size(), 0.0);
    layer_load.resize(stats.size());
    for (size_t i = 0; i < stats.size(); ++i) {
      layer_active[i] += stats[i].second.mean_active_experts * n;
      layer_load[i].resize(stats[i].second.load.size(), 0.0);
      for (size_t e = 0; e < layer_load[i].size(); ++e) layer_load[i][e] += stats[i].second.load[e] * n;
    }
    bar.update(b + 1);
  }
  bar.finish();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const double loss = tokens > 0 ? nats / tokens : 0.0;
  // Bits per byte over the bytes the scored tokens stand for (the data's bytes per token).
  const double bytes_per_token = static_cast<double>(data.text_bytes()) / static_cast<double>(data.size());
  const double bits_per_byte = loss / (std::log(2.0) * bytes_per_token);
  json out = {{"model", a.model},
              {"data", a.data},
              {"loss", loss},
              {"perplexity", std::exp(loss)},
              {"bits_per_byte", bits_per_byte},
              {"tokens", tokens},
              {"seq_len", T},
              {"parameters", cfg.parameter_count()},
              {"active_parameters", positions > 0 ? active / positions : 0.0},  // means over every input position
              {"tokens_per_s", seconds > 0 ? static_cast<double>(tokens) / seconds : 0.0}};
  if (cfg.num_local_experts > 0) {
    json layers = json::array();
    const auto stats = model.moe_stats();
    for (size_t i = 0; i < stats.size(); ++i) {
      std::vector<double> load = layer_load[i];
      for (double& v : load) v /= std::max(positions, 1.0);
      layers.push_back({{"layer", stats[i].first}, {"policy", model.routing_policies()[stats[i].first].str()},
                        {"active_experts", positions > 0 ? layer_active[i] / positions : 0.0}, {"expert_load", load}});
    }
    out["moe_layers"] = layers;
  }
  out["memory"] = weight_memory(model);
  if (a.json) std::printf("%s\n", out.dump().c_str());
  else
    std::printf("loss %.4f | perplexity %.3f | %.4f bits per byte | %ld tokens | %ld parameters, %.0f active per token | %.0f tokens/s\n",
                loss, std::exp(loss), bits_per_byte, static_cast<long>(tokens), static_cast<long>(cfg.parameter_count()),
                out["active_parameters"].get<double>(), out["tokens_per_s"].get<double>());
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto args = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand("eval", "Loss, perplexity and bits per byte of a model on a text file");
  cmd->add_option("--model", args->model, "Model directory (config.json + model.safetensors)")->required();
  cmd->add_option("--data", args->data, "Text file to score (in disjoint windows), or a prepared data directory")->required();
  cmd->add_option("--split", args->split, "Split of a prepared directory: val or train")->capture_default_str();
  cmd->add_option("--seq-len", args->seq_len, "Window length (default: the training seq_len from recipe.json, else min(max_position_embeddings, 256))");
  cmd->add_option("--batch-size", args->batch_size, "Windows per forward pass")->capture_default_str();
  cmd->add_option("--max-batches", args->max_batches, "Stop after this many batches (0 = whole file)")->capture_default_str();
  cmd->add_option("--save-logits", args->save_logits, "Write the first batch's input_ids and logits to this .safetensors file");
  cmd->add_option("--routing", args->routing, "MoE routing policy: top-k:K, top-p:P[:MAX], or a per-layer JSON file");
  cmd->add_flag("--json", args->json, "Print the result as one JSON object");
  add_weights_option(*cmd, args->weights);
  add_map_experts_option(*cmd, args->map_experts);
  add_threads_option(*cmd, args->threads);
  add_device_option(*cmd, args->device);
  cmd->callback([args, cmd] {
    refuse_unused(*cmd, "--split", is_prepared_data(args->data), "with a text --data (a prepared directory has the splits)");
    run_eval(*args);
  });
}

}  // namespace smelt::tools
