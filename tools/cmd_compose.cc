// smelt compose: dense domain experts → one MoE (models/compose.h). Everything is checked before
// any weights are read: every input's architecture against the base's and every tokenizer
// against the base's, naming the input that differs.
#include <cstdio>
#include <filesystem>
#include <map>

#include "io/checkpoint.h"
#include "io/config_json.h"
#include "io/corpus.h"
#include "io/files.h"
#include "io/prepared_data.h"
#include "models/compose.h"
#include "tools/commands.h"
#include "tools/runners.h"
#include "tools/data_source.h"
#include "tools/device_option.h"

namespace smelt::tools {
namespace {


ModelConfig read_config(const std::string& dir) { return read_model_dir_config(dir); }

// Up to `windows` windows of seq_len tokens from a prompt file (text, .jsonl or a prepared directory),
// spread evenly over it.
Tensor prompt_ids(const std::string& path, const std::optional<BpeTokenizer>& tokenizer, int64_t windows, int64_t seq_len) {
  TokenDataset d;
  if (is_prepared_data(path)) {
    d = TokenDataset::from_prepared(path, "train", seq_len + 1);
  } else {
    std::string text;
    for (const Document& doc : read_documents(path)) text += doc.plain_text() + "\n";
    d = tokenizer ? TokenDataset::from_tokens(tokenizer->encode(text), {}, path, static_cast<int64_t>(text.size()), tokenizer->vocab_size())
                  : TokenDataset::from_bytes(text, path);
  }
  SMELT_CHECK(d.size() >= seq_len + 1, path, ": ", d.size(), " tokens, fewer than one prompt window of ", seq_len + 1);
  // Spread evenly over the file: its first windows may be one document, not the domain.
  return d.eval_batch(0, 1, std::min(windows, d.windows(seq_len)), seq_len).ids;
}

}  // namespace

void run_compose(ComposeArgs a) {
  apply_threads(a.threads);
  check_output_dir(a.out);
  {
    std::vector<std::string> inputs = {a.base};
    for (const auto* list : {&a.experts, &a.prompts, &a.negatives}) inputs.insert(inputs.end(), list->begin(), list->end());
    check_output_apart("--out", a.out, inputs);
  }
  SMELT_CHECK(a.seq_len > 0 && a.prompt_windows > 0, "--seq-len and --prompt-windows must be positive, got ", a.seq_len, " and ",
              a.prompt_windows);
  a.options.shared_expert = a.shared_expert;
  a.options.seed = static_cast<uint64_t>(a.seed);
  const int64_t E = static_cast<int64_t>(a.experts.size());
  a.options.validate(E);
  SMELT_CHECK(a.options.gate_init == "random" || static_cast<int64_t>(a.prompts.size()) == E, "--gate-init ", a.options.gate_init,
              " needs --prompts with one file per expert (", E, "), got ", a.prompts.size());
  SMELT_CHECK(a.negatives.empty() || static_cast<int64_t>(a.negatives.size()) == E, "--negative-prompts: one file per expert (", E, "), got ",
              a.negatives.size());
  // Architecture and tokenizer of every input, before any weights.
  std::vector<ModelConfig> configs{read_config(a.base)};
  std::vector<std::string> names{a.base};
  for (const std::string& e : a.experts) {
    configs.push_back(read_config(e));
    names.push_back(e);
  }
  check_composable(configs, names);
  const std::optional<BpeTokenizer> tokenizer = model_tokenizer(a.base);
  for (const std::string& e : a.experts) {
    const std::optional<BpeTokenizer> t = model_tokenizer(e);
    SMELT_CHECK(t.has_value() == tokenizer.has_value() && (!t || t->same_as(*tokenizer)), e, ": its tokenizer differs from ", a.base, "'s");
  }
  for (const std::string& p : a.prompts) SMELT_CHECK(std::filesystem::exists(p), p, ": no such prompt file");
  for (const std::string& p : a.negatives) SMELT_CHECK(std::filesystem::exists(p), p, ": no such prompt file");
  const int64_t T = std::min(a.seq_len, configs[0].max_position_embeddings);

  const Device device = chosen_device(a.device);
  const Transformer base = load_model_dir(a.base, DType::F32, Transformer::Experts::InMemory, device);
  std::vector<Transformer> experts;
  for (const std::string& e : a.experts) experts.push_back(load_model_dir(e, DType::F32, Transformer::Experts::InMemory, device));
  std::vector<const Transformer*> expert_ptrs;
  for (const Transformer& e : experts) expert_ptrs.push_back(&e);
  std::vector<Tensor> prompts, negatives;
  for (const std::string& p : a.prompts) prompts.push_back(prompt_ids(p, tokenizer, a.prompt_windows, T).to(device));
  for (const std::string& p : a.negatives) negatives.push_back(prompt_ids(p, tokenizer, a.prompt_windows, T).to(device));
  ComposeReport report;
  const Transformer moe = compose(base, expert_ptrs, prompts, negatives, a.options, &report);

  std::map<std::string, std::string> extra = carried_model_files(a.base);
  save_model_dir(a.out, moe, extra);
  const ModelConfig& c = moe.config();
  json out = {{"out", a.out}, {"experts", E}, {"top_k", c.num_experts_per_tok}, {"gate_init", a.options.gate_init},
              {"shared_expert", a.shared_expert}, {"parameters", c.parameter_count()}, {"active_parameters", c.active_parameter_count()}};
  std::string per_layer;  // auto's choice per layer, with how many domains each candidate routed mostly home
  if (!report.layer_gate_init.empty()) {
    out["layer_gate_init"] = report.layer_gate_init;
    json held_out = json::array();
    for (size_t l = 0; l < report.layer_gate_init.size(); ++l) {
      const auto [hidden, lda] = report.held_out_own_largest[l];
      held_out.push_back({{"hidden", hidden}, {"lda", lda}});
      per_layer += " " + std::to_string(l) + ":" + report.layer_gate_init[l] + "(" + std::to_string(hidden) + "/" + std::to_string(lda) + ")";
    }
    out["held_out_domains_routed_home"] = held_out;
  }
  if (a.json) std::printf("%s\n", out.dump().c_str());
  else
    std::printf("composed %ld experts → %s: top-%ld, router from %s%s; %ld parameters (%ld active per token)\n", static_cast<long>(E),
                a.out.c_str(), static_cast<long>(c.num_experts_per_tok), a.options.gate_init.c_str(),
                per_layer.empty() ? "" : (", per layer (held-out domains routed home, hidden/lda):" + per_layer).c_str(),
                static_cast<long>(c.parameter_count()), static_cast<long>(c.active_parameter_count()));
}


void add_compose_command(CLI::App& app) {
  auto a = std::make_shared<ComposeArgs>();
  CLI::App* cmd = app.add_subcommand("compose", "Compose dense domain experts into one MoE (Branch-Train-MiX)");
  cmd->add_option("--base", a->base, "The model the experts were fine-tuned from")->required();
  cmd->add_option("--experts", a->experts, "Expert model directories; expert i's FFNs become expert i")->required();
  cmd->add_option("--out", a->out, "Output MoE model directory")->required();
  cmd->add_option("--top-k", a->options.top_k, "Experts per token")->capture_default_str();
  cmd->add_option("--gate-init", a->options.gate_init, "Router rows from: hidden (mean FFN input on each expert's prompts), lda (the same whitened by the prompts' within-domain covariance), auto (per layer, hidden or lda, whichever routes held-out prompt windows home better), embed, random")
      ->capture_default_str();
  cmd->add_option("--prompts", a->prompts, "One text/JSONL file or prepared directory per expert (for hidden and embed)");
  cmd->add_option("--negative-prompts", a->negatives, "Optional: one file per expert whose mean is subtracted instead of the experts' mean");
  cmd->add_option("--prompt-windows", a->prompt_windows, "Windows read from each prompt file")->capture_default_str();
  cmd->add_option("--seq-len", a->seq_len, "Window length for prompts")->capture_default_str();
  cmd->add_option("--shared-weights", a->options.shared, "Attention, embeddings and norms: average (BTX) or base")->capture_default_str();
  cmd->add_flag("--shared-expert", a->shared_expert, "Add the base FFN as an always-on shared expert");
  cmd->add_option("--seed", a->seed, "Seed for --gate-init random")->capture_default_str();
  cmd->add_flag("--json", a->json, "Print the result as JSON");
  add_threads_option(*cmd, a->threads);
  add_device_option(*cmd, a->device);
  cmd->callback([a, cmd] {
    const std::string& init = a->options.gate_init;
    refuse_unused(*cmd, "--seed", init == "random", "without --gate-init random");
    for (const char* prompt_option : {"--prompts", "--prompt-windows", "--seq-len"})
      refuse_unused(*cmd, prompt_option, init != "random", "with --gate-init random");
    refuse_unused(*cmd, "--negative-prompts", init == "hidden" || init == "embed", "with --gate-init " + init + " (hidden and embed use them)");
    // The default window is capped at the base model's context; a length given is not cut silently.
    if (cmd->count("--seq-len") > 0) {
      const int64_t positions = read_config(a->base).max_position_embeddings;
      SMELT_CHECK(a->seq_len <= positions, "--seq-len ", a->seq_len, " exceeds ", a->base, "'s max_position_embeddings (", positions, ")");
    }
    run_compose(*a);
  });
}

}  // namespace smelt::tools
