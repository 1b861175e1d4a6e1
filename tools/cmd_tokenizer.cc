// smelt tokenizer train|encode|decode: byte-level BPE tokenizers as Hugging Face tokenizer.json.
#include <cctype>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "io/bpe_tokenizer.h"
#include "io/corpus.h"
#include "io/files.h"
#include "runtime/log.h"
#include "tools/commands.h"

namespace smelt::tools {
namespace {

struct TokenizerArgs {
  std::vector<std::string> data;
  std::string glob = "*", out, tokenizer, text, file, ids;
  BpeTrainOptions options;
  bool special = false, json = false;
  int threads = 0;
};

void run_train(const TokenizerArgs& a) {
  apply_threads(a.threads);
  SMELT_CHECK(!a.out.empty(), "tokenizer train: --out is required");
  check_output_file(a.out);
  check_output_apart("--out", a.out, a.data);
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::string> docs;
  int64_t bytes = 0;
  for (const std::string& f : expand_inputs(a.data, a.glob))
    for (const Document& d : read_documents(f)) {
      docs.push_back(d.plain_text());
      bytes += static_cast<int64_t>(docs.back().size());
    }
  SMELT_CHECK(bytes > 0, "tokenizer train: ", a.data.empty() ? std::string("--data") : a.data[0], a.data.size() > 1 ? " …" : "",
              ": no text to learn merges from");
  std::vector<std::string_view> views(docs.begin(), docs.end());
  BpeTrainOptions options = a.options;
  options.special_tokens = BpeTokenizer::default_special_tokens();
  options.show_progress = !a.json;
  BpeTokenizer t = BpeTokenizer::train(views, options);
  t.save(a.out);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  json out = {{"out", a.out},          {"vocab_size", t.vocab_size()}, {"merges", t.merges()},
              {"documents", docs.size()}, {"bytes", bytes},            {"seconds", seconds}};
  if (a.json) std::printf("%s\n", out.dump().c_str());
  else
    std::printf("trained %s: %ld tokens (%ld merges) from %.1f MB in %.1f s\n", a.out.c_str(), static_cast<long>(t.vocab_size()),
                static_cast<long>(t.merges()), static_cast<double>(bytes) / 1e6, seconds);
  if (t.vocab_size() < a.options.vocab_size)
    log_warn("the corpus ran out of pairs seen at least " + std::to_string(a.options.min_frequency) + " times: vocabulary is " +
             std::to_string(t.vocab_size()) + ", not " + std::to_string(a.options.vocab_size));
}

// A file's bytes, or standard input's for "-".
std::string read_input(const std::string& file) {
  if (file != "-") return read_file(file);
  std::ostringstream all;
  all << std::cin.rdbuf();
  return all.str();
}

void run_encode(const TokenizerArgs& a) {
  const BpeTokenizer t = BpeTokenizer::from_file(a.tokenizer);
  const std::string text = a.file.empty() ? a.text : read_input(a.file);
  const std::vector<int32_t> ids = t.encode(text, a.special);
  if (a.json) {
    std::printf("%s\n", json({{"tokens", ids.size()}, {"bytes", text.size()}, {"ids", ids}}).dump().c_str());
  } else {
    std::printf("%s\n", json(ids).dump().c_str());
  }
}

void run_decode(const TokenizerArgs& a) {
  SMELT_CHECK(a.ids.empty() != a.file.empty(), "tokenizer decode: give exactly one of --ids and --file");
  const BpeTokenizer t = BpeTokenizer::from_file(a.tokenizer);
  std::vector<int32_t> ids;
  // Ids separated by commas and/or white space (as `tokenizer encode` prints them, brackets too).
  std::string list = a.file.empty() ? a.ids : read_input(a.file);
  for (char& c : list)
    if (c == '[' || c == ']' || std::isspace(static_cast<unsigned char>(c))) c = ',';
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    size_t used = 0;
    long v = 0;
    try {
      v = std::stol(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    SMELT_CHECK(used == item.size(), "tokenizer decode: ", a.file.empty() ? "--ids" : a.file, ": \"", item, "\" is not an integer");
    ids.push_back(static_cast<int32_t>(v));
  }
  const std::string text = t.decode(ids);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::printf("\n");
}

}  // namespace

void add_tokenizer_command(CLI::App& app) {
  auto a = std::make_shared<TokenizerArgs>();
  CLI::App* cmd = app.add_subcommand("tokenizer", "Train, use and inspect byte-level BPE tokenizers (HF tokenizer.json)");
  cmd->require_subcommand(1);
  CLI::App* train = cmd->add_subcommand("train", "Learn a byte-level BPE vocabulary from text, JSONL or folders");
  train->add_option("--data", a->data, "Text or .jsonl files, or folders (walked recursively)")->required();
  train->add_option("--glob", a->glob, "File-name pattern for folders")->capture_default_str();
  train->add_option("--vocab-size", a->options.vocab_size, "Tokens in all: 256 bytes + merges + special tokens")->capture_default_str();
  train->add_option("--min-frequency", a->options.min_frequency, "Never merge a pair seen fewer times")->capture_default_str();
  train->add_option("--out", a->out, "Output tokenizer.json")->required();
  train->add_flag("--json", a->json, "Print the result as JSON");
  add_threads_option(*train, a->threads);
  train->callback([a, train] {
    refuse_unused(*train, "--glob", any_folder(a->data), "without a folder among --data (it picks the files inside folders)");
    run_train(*a);
  });

  CLI::App* encode = cmd->add_subcommand("encode", "Print the token ids of a text");
  encode->add_option("--tokenizer", a->tokenizer, "tokenizer.json")->required();
  encode->add_option("--text", a->text, "Text to encode");
  encode->add_option("--file", a->file, "File to encode (- reads standard input)");
  encode->add_flag("--special", a->special, "Turn special-token strings in the text into special tokens");
  encode->add_flag("--json", a->json, "Print {tokens, bytes, ids}");
  encode->callback([a, encode] {
    SMELT_CHECK((encode->count("--text") > 0) != (encode->count("--file") > 0), "tokenizer encode: give exactly one of --text and --file");
    run_encode(*a);
  });

  CLI::App* decode = cmd->add_subcommand("decode", "Print the text of comma-separated token ids");
  decode->add_option("--tokenizer", a->tokenizer, "tokenizer.json")->required();
  decode->add_option("--ids", a->ids, "Ids, e.g. 72,101,108");
  decode->add_option("--file", a->file, "File of ids separated by commas or white space (- reads standard input)");
  decode->callback([a] { run_decode(*a); });
}

}  // namespace smelt::tools
