// smelt generate: sample text from a model with a KV cache (temperature, top-k, top-p).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "autograd/grad_mode.h"
#include "io/chat.h"
#include "io/checkpoint.h"
#include "tools/data_source.h"
#include "tools/device_option.h"
#include "ops/ops.h"
#include "runtime/rng.h"
#include "tools/commands.h"
#include "tools/weights_option.h"
#include "tools/routing_option.h"

namespace smelt::tools {
namespace {

struct GenerateArgs {
  std::string model, prompt, system, routing, weights = "f32";
  int64_t max_new_tokens = 200, top_k = 0, seed = 0;
  double temperature = 0.8, top_p = 1.0;
  bool chat = false, map_experts = false;
  int threads = 0;
  std::string device;
};

// Draws the next token from logits: greedy at temperature 0, else softmax(logits / T)
// restricted to the top-k tokens and to the smallest set whose probability reaches top-p.
int64_t sample(const std::vector<float>& logits, const GenerateArgs& a, Philox& rng) {
  const int64_t V = static_cast<int64_t>(logits.size());
  if (a.temperature <= 0) return std::max_element(logits.begin(), logits.end()) - logits.begin();
  std::vector<int64_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return logits[x] > logits[y]; });
  int64_t keep = a.top_k > 0 ? std::min(a.top_k, V) : V;
  std::vector<double> p(keep);
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) total += p[i] = std::exp((logits[order[i]] - logits[order[0]]) / a.temperature);
  double cum = 0;
  int64_t nucleus = keep;
  for (int64_t i = 0; i < keep; ++i) {
    cum += p[i] / total;
    if (cum >= a.top_p) {
      nucleus = i + 1;
      break;
    }
  }
  double mass = 0;
  for (int64_t i = 0; i < nucleus; ++i) mass += p[i];
  double u = rng.next_uniform() * mass;
  for (int64_t i = 0; i < nucleus; ++i) {
    u -= p[i];
    if (u <= 0) return order[i];
  }
  return order[nucleus - 1];
}

void run_generate(const GenerateArgs& a) {
  apply_threads(a.threads);
  SMELT_CHECK(!a.prompt.empty(), "--prompt must not be empty");
  SMELT_CHECK(a.system.empty() || a.chat, "--system is the system turn of a --chat conversation; add --chat");
  SMELT_CHECK(a.top_p > 0 && a.top_p <= 1, "--top-p must be in (0, 1], got ", a.top_p);
  SMELT_CHECK(a.temperature >= 0 && std::isfinite(a.temperature), "--temperature must be finite and ≥ 0, got ", a.temperature);
  SMELT_CHECK(a.top_k >= 0, "--top-k must be ≥ 0 (0: every token), got ", a.top_k);
  SMELT_CHECK(a.max_new_tokens >= 0, "--max-new-tokens must be ≥ 0, got ", a.max_new_tokens);
  const Device device = chosen_device(a.device);
  Transformer model = load_inference_model(a.model, a.weights, a.map_experts, device);
  apply_routing_option(model, a.routing);
  const ModelConfig& cfg = model.config();
  // Text in and out through the model's tokenizer when it has one, else bytes.
  const std::optional<BpeTokenizer> tokenizer = model_tokenizer(a.model);
  SMELT_CHECK(!a.chat || tokenizer, a.model, ": --chat needs a model with a tokenizer (chat tokens)");
  std::vector<int64_t> ids;
  int64_t stop = -1;  // token that ends the text
  if (!tokenizer) {
    SMELT_CHECK(cfg.vocab_size >= 256, a.model, ": no tokenizer, and a vocabulary of ", cfg.vocab_size,
                ": a prompt is read as bytes, which needs 256 ids (import the model with its tokenizer)");
    for (unsigned char c : a.prompt) ids.push_back(c);
  } else if (a.chat) {
    check_chat_tokens(*tokenizer, a.model);
    // The model's own template may insert a system prompt when the conversation has none.
    const std::string system = a.system.empty() ? default_system_prompt(model_chat_template(a.model)) : a.system;
    std::vector<ChatMessage> messages;
    if (!system.empty()) messages.push_back({"system", system});
    messages.push_back({"user", a.prompt});
    for (int32_t t : render_chat_prompt(*tokenizer, messages)) ids.push_back(t);
    stop = chat_turn_end(*tokenizer);
  } else {
    for (int32_t t : tokenizer->encode(a.prompt)) ids.push_back(t);
    for (const char* end : {"<|eos|>", "<|endoftext|>"})
      if (stop < 0 && tokenizer->has_special(end)) stop = tokenizer->special_id(end);
  }
  SMELT_CHECK(!ids.empty(), "--prompt encodes to no tokens");
  // Byte-level models only sample byte ids; tokenizer models any id of the tokenizer.
  const int64_t sample_vocab = std::min<int64_t>(cfg.vocab_size, tokenizer ? tokenizer->vocab_size() : 256);
  const int64_t capacity = cfg.max_position_embeddings;
  SMELT_CHECK(static_cast<int64_t>(ids.size()) < capacity, "the prompt (", ids.size(), " tokens) fills the model's context of ",
              capacity, " tokens");
  NoGradGuard no_grad;
  Philox rng(static_cast<uint64_t>(a.seed));
  if (!a.chat) std::fwrite(a.prompt.data(), 1, a.prompt.size(), stdout);
  // The cache holds what this generation can reach, not the whole context (a model with a long
  // context would otherwise take gigabytes to write a few tokens).
  const int64_t cache_capacity = std::min<int64_t>(capacity, static_cast<int64_t>(ids.size()) + std::max<int64_t>(a.max_new_tokens, 1));
  KVCache cache = model.make_cache(1, cache_capacity);
  Tensor logits = model.last_logits(Tensor::from_ints(ids, {1, static_cast<int64_t>(ids.size())}, DType::I64, device), &cache);
  double active_sum = model.mean_active_parameters() * static_cast<double>(ids.size());
  int64_t forwarded = static_cast<int64_t>(ids.size());
  const auto decode_start = std::chrono::steady_clock::now();
  int64_t decoded = 0;
  for (int64_t produced = 0; produced < a.max_new_tokens; ++produced) {
    std::vector<float> last = ops::slice(logits, 1, -1, logits.size(1)).to_vector();
    last.resize(sample_vocab);
    const int64_t next = sample(last, a, rng);
    if (next == stop) break;
    const std::string text = tokenizer ? tokenizer->decode({static_cast<int32_t>(next)}) : std::string(1, static_cast<char>(next));
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    ids.push_back(next);
    int64_t fed = 1;
    if (cache.length < cache_capacity) {
      logits = model.forward(Tensor::from_ints({next}, {1, 1}, DType::I64, device), &cache);
    } else {
      // Context full: start a fresh cache from the last half of the text (positions beyond the
      // trained length are never used).
      const int64_t keep = capacity / 2;
      std::vector<int64_t> tail(ids.end() - keep, ids.end());
      cache = model.make_cache(1, capacity);
      logits = model.last_logits(Tensor::from_ints(tail, {1, keep}, DType::I64, device), &cache);
      fed = keep;
    }
    active_sum += model.mean_active_parameters() * static_cast<double>(fed);
    forwarded += fed;
    ++decoded;
  }
  std::fputc('\n', stdout);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - decode_start).count();
  if (decoded > 0)
    std::fprintf(stderr, "decoded %ld tokens in %.3f s (%.1f tokens/s, batch 1)\n", static_cast<long>(decoded), seconds,
                 static_cast<double>(decoded) / seconds);
  if (cfg.num_local_experts > 0) {
    std::fprintf(stderr, "active parameters per token: %.0f of %ld\n", active_sum / static_cast<double>(forwarded),
                 static_cast<long>(cfg.parameter_count()));
    const json m = weight_memory(model);
    std::fprintf(stderr, "memory: %.1f MiB resident; weights %.1f MiB, of which experts %.1f MiB (%.1f MiB of them in memory%s)\n",
                 m["rss_mib"].get<double>(), m["weight_mib"].get<double>(), m["expert_mib"].get<double>(), m["expert_resident_mib"].get<double>(),
                 a.map_experts ? ": the experts the tokens chose" : "");
  }
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "Sample text from a model (KV cache; temperature, top-k, top-p)");
  cmd->add_option("--model", args->model, "Model directory or .gguf file")->required();
  cmd->add_option("--prompt", args->prompt, "Text to continue (with --chat: the user's message)")->required();
  cmd->add_flag("--chat", args->chat, "Wrap the prompt in the chat template and print the assistant's answer");
  cmd->add_option("--system", args->system, "With --chat: the system message (default: the one the model's chat template inserts, if any)");
  cmd->add_option("--max-new-tokens", args->max_new_tokens, "Tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", args->temperature, "Softmax temperature (0 = greedy)")->capture_default_str();
  cmd->add_option("--top-k", args->top_k, "Sample among the k most likely tokens (0 = all)")->capture_default_str();
  cmd->add_option("--top-p", args->top_p, "Nucleus sampling: smallest set with this much probability")->capture_default_str();
  cmd->add_option("--seed", args->seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--routing", args->routing, "MoE routing policy: top-k:K, top-p:P[:MAX], or a per-layer JSON file");
  add_weights_option(*cmd, args->weights);
  add_map_experts_option(*cmd, args->map_experts);
  add_threads_option(*cmd, args->threads);
  add_device_option(*cmd, args->device);
  cmd->callback([args, cmd] {
    for (const char* sampling : {"--top-k", "--top-p", "--seed"})
      refuse_unused(*cmd, sampling, args->temperature > 0, "with --temperature 0 (greedy decoding samples nothing)");
    run_generate(*args);
  });
}

}  // namespace smelt::tools
