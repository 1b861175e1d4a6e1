// Prepared data directories (`smelt data prepare`): a corpus tokenised once into shards.
//   DIR/manifest.json          what is here (format, version, vocabulary, splits, sources)
//   DIR/tokenizer.json         the tokenizer that made the ids (+ tokenizer_config.json)
//   DIR/train-00000.tok ...    token shards (io/token_shard.h), DIR/val-00000.tok ...
// Text files are cut into blocks (about 1% of the corpus, 1–64 KB) at piece boundaries (encoding a block gives the
// ids encoding the whole file would); each document ends with <|eos|>. Conversations (JSONL
// with "messages" or "prompt"/"response") are rendered with the chat template and carry a loss
// mask. Every round(1/val_fraction)-th block or conversation goes to the validation split, so it
// samples the whole corpus. Blocks are encoded in parallel; the result does not depend on the
// thread count. The directory is written atomically.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/token_shard.h"

namespace smelt {

struct DataSplit {
  int64_t tokens = 0, blocks = 0, text_bytes = 0;
  std::vector<std::string> shards;  // file names inside the directory
};

struct DataSource {
  std::string path;
  int64_t documents = 0, bytes = 0;
};

struct DataManifest {
  int64_t version = 1, vocab_size = 0;
  bool masked = false;  // the shards carry a loss mask (instruct data)
  double val_fraction = 0;
  DataSplit train, val;
  std::vector<DataSource> sources;
  const DataSplit& split(const std::string& name) const;  // "train" or "val"; throws otherwise
};

struct PrepareOptions {
  std::vector<std::string> inputs;  // files or folders
  std::string glob = "*";
  std::string tokenizer;            // tokenizer.json
  std::string out;
  double val_fraction = 0.05;
  int64_t shard_tokens = int64_t{1} << 25;  // tokens per shard file at most
};

struct PrepareResult {
  DataManifest manifest;
  double seconds = 0;
};

PrepareResult prepare_data(const PrepareOptions& options);

// Reads DIR/manifest.json; errors name the file and field.
DataManifest read_data_manifest(const std::string& dir);
// All shards of a split, concatenated and checked against the manifest.
TokenShard read_split_tokens(const std::string& dir, const DataManifest& manifest, const std::string& split);
// True when `path` is a directory with a manifest.json (a prepared data directory).
bool is_prepared_data(const std::string& path);

}  // namespace smelt
