// smelt data prepare: text, JSONL or folders → token shards + manifest (io/prepared_data.h).
#include <cstdio>

#include "io/files.h"
#include "io/json_reader.h"
#include "io/prepared_data.h"
#include "runtime/thread_pool.h"
#include "runtime/log.h"
#include "io/corpus.h"
#include "tools/commands.h"

namespace smelt::tools {
namespace {

struct DataArgs {
  PrepareOptions options;
  bool json = false;
  int threads = 0;
};

void run_prepare(const DataArgs& a) {
  apply_threads(a.threads);
  check_output_dir(a.options.out, "manifest.json");
  {
    std::vector<std::string> inputs = a.options.inputs;
    inputs.push_back(a.options.tokenizer);
    check_output_apart("--out", a.options.out, inputs);
  }
  const PrepareResult r = prepare_data(a.options);
  const DataManifest& m = r.manifest;
  int64_t bytes = 0;
  for (const DataSource& s : m.sources) bytes += s.bytes;
  const double mb_per_s = static_cast<double>(bytes) / 1e6 / r.seconds;
  const double bytes_per_token = static_cast<double>(m.train.text_bytes + m.val.text_bytes) / static_cast<double>(m.train.tokens + m.val.tokens);
  json out = {{"out", a.options.out},         {"files", m.sources.size()},     {"bytes", bytes},
              {"train_tokens", m.train.tokens}, {"val_tokens", m.val.tokens},  {"masked", m.masked},
              {"vocab_size", m.vocab_size},    {"bytes_per_token", bytes_per_token}, {"seconds", r.seconds},
              {"mb_per_s", mb_per_s},          {"threads", num_threads()}};
  if (a.json) std::printf("%s\n", out.dump().c_str());
  else
    std::printf("prepared %s: %ld files, %.1f MB → %ld training + %ld validation tokens (%.2f bytes/token%s) in %.1f s (%.1f MB/s)\n",
                a.options.out.c_str(), static_cast<long>(m.sources.size()), static_cast<double>(bytes) / 1e6, static_cast<long>(m.train.tokens),
                static_cast<long>(m.val.tokens), bytes_per_token, m.masked ? ", loss-masked conversations" : "", r.seconds, mb_per_s);
}

}  // namespace

void add_data_command(CLI::App& app) {
  auto a = std::make_shared<DataArgs>();
  CLI::App* cmd = app.add_subcommand("data", "Prepare training data (token shards)");
  cmd->require_subcommand(1);
  CLI::App* prep = cmd->add_subcommand("prepare", "Tokenise text, JSONL (text or conversations) or folders into token shards");
  prep->add_option("--data", a->options.inputs, "Files or folders (walked recursively)")->required();
  prep->add_option("--glob", a->options.glob, "File-name pattern for folders, e.g. \"*.h\"")->capture_default_str();
  prep->add_option("--tokenizer", a->options.tokenizer, "tokenizer.json (smelt tokenizer train)")->required();
  prep->add_option("--out", a->options.out, "Output directory")->required();
  prep->add_option("--val-fraction", a->options.val_fraction, "Share of blocks/conversations held out for validation")->capture_default_str();
  prep->add_option("--shard-tokens", a->options.shard_tokens, "Tokens per shard file at most")->capture_default_str();
  prep->add_flag("--json", a->json, "Print the result as JSON");
  add_threads_option(*prep, a->threads);
  prep->callback([a, prep] {
    refuse_unused(*prep, "--glob", any_folder(a->options.inputs), "without a folder among --data (it picks the files inside folders)");
    run_prepare(*a);
  });
}

}  // namespace smelt::tools
