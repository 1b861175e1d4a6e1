#include "io/prepared_data.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "io/bpe_tokenizer.h"
#include "io/chat.h"
#include "io/corpus.h"
#include "io/files.h"
#include "io/json_reader.h"
#include "io/pretokenize.h"
#include "runtime/thread_pool.h"

namespace smelt {
namespace {

// Blocks of about 1% of the corpus, between 1 KB and 64 KB: small corpora still have enough
// blocks to hold some out, large ones are encoded in parallel pieces of a useful size.
size_t block_bytes_for(size_t total) { return std::clamp<size_t>(total / 100, 1024, 64 * 1024); }
constexpr const char* kFormat = "smelt-token-shards";

// One unit of encoding and of the train/val split: a block of a text document, or a conversation.
struct Unit {
  const Document* doc;
  size_t begin = 0, end = 0;  // byte range of doc->text (text documents)
  bool last = true;           // the document's last block: ends with <|eos|>
};

std::vector<Unit> units_of(const std::vector<Document>& docs) {
  size_t total = 0;
  for (const Document& d : docs) total += d.text.size();
  const size_t block = block_bytes_for(total);
  std::vector<Unit> units;
  for (const Document& d : docs) {
    if (d.is_chat() || d.text.empty()) {
      if (d.is_chat()) units.push_back({&d, 0, 0, true});
      continue;
    }
    for (size_t pos = 0; pos < d.text.size();) {
      const size_t end = next_piece_boundary(d.text, pos + block);
      units.push_back({&d, pos, end, end == d.text.size()});
      pos = end;
    }
  }
  return units;
}

bool is_val_unit(int64_t u, double f) { return std::floor(static_cast<double>(u + 1) * f) > std::floor(static_cast<double>(u) * f); }

json split_json(const DataSplit& s) {
  return {{"tokens", s.tokens}, {"blocks", s.blocks}, {"text_bytes", s.text_bytes}, {"shards", s.shards}};
}

DataSplit read_split(JsonReader r) {
  DataSplit s;
  s.tokens = r.integer("tokens");
  s.blocks = r.integer("blocks");
  s.text_bytes = r.integer("text_bytes");
  s.shards = r.strings("shards", {});
  r.finish();
  return s;
}

}  // namespace

const DataSplit& DataManifest::split(const std::string& name) const {
  if (name == "train") return train;
  if (name == "val") return val;
  SMELT_FAIL("unknown data split \"", name, "\" (expected train or val)");
}

bool is_prepared_data(const std::string& path) {
  return std::filesystem::is_directory(path) && std::filesystem::exists(path + "/manifest.json");
}

DataManifest read_data_manifest(const std::string& dir) {
  const std::string path = dir + "/manifest.json";
  const json j = read_json_file(path);
  JsonReader r(j, path);
  DataManifest m;
  const std::string format = r.string("format");
  SMELT_CHECK(format == kFormat, r.where("format"), ": \"", format, "\" is not ", kFormat);
  m.version = r.integer("version");
  SMELT_CHECK(m.version == 1, r.where("version"), ": ", m.version, " (this smelt reads version 1)");
  m.vocab_size = r.integer("vocab_size");
  SMELT_CHECK(m.vocab_size > 0, r.where("vocab_size"), ": must be positive");
  SMELT_CHECK(r.string("tokenizer") == "tokenizer.json", r.where("tokenizer"), ": expected \"tokenizer.json\"");
  m.masked = r.boolean("masked");
  m.val_fraction = r.number("val_fraction");
  r.ignore("seconds");
  r.ignore("sources");
  JsonReader splits = r.object("splits");
  m.train = read_split(splits.object("train"));
  m.val = read_split(splits.object("val"));
  splits.finish();
  r.finish();
  return m;
}

TokenShard read_split_tokens(const std::string& dir, const DataManifest& m, const std::string& split) {
  const DataSplit& s = m.split(split);
  TokenShard all;
  all.vocab_size = static_cast<uint32_t>(m.vocab_size);
  for (const std::string& name : s.shards) {
    SMELT_CHECK(name.find('/') == std::string::npos && name.find("..") == std::string::npos, dir,
                "/manifest.json: splits.", split, ".shards: \"", name, "\" is not a file name in the directory");
    const std::string path = dir + "/" + name;
    TokenShard shard = read_token_shard(path);
    SMELT_CHECK(shard.vocab_size == all.vocab_size, path, ": vocabulary size ", shard.vocab_size, " but the manifest says ", m.vocab_size);
    SMELT_CHECK(shard.mask.empty() != m.masked, path, ": ", m.masked ? "has no loss mask but the manifest says masked" : "has a loss mask the manifest does not declare");
    all.tokens.insert(all.tokens.end(), shard.tokens.begin(), shard.tokens.end());
    all.mask.insert(all.mask.end(), shard.mask.begin(), shard.mask.end());
  }
  SMELT_CHECK(static_cast<int64_t>(all.tokens.size()) == s.tokens, dir, "/manifest.json: splits.", split, ".tokens says ", s.tokens,
              " but the shards hold ", all.tokens.size());
  return all;
}

PrepareResult prepare_data(const PrepareOptions& o) {
  SMELT_CHECK(o.val_fraction >= 0 && o.val_fraction < 1, "data prepare: --val-fraction must be in [0, 1), got ", o.val_fraction);
  SMELT_CHECK(o.shard_tokens > 0, "data prepare: --shard-tokens must be positive");
  SMELT_CHECK(!o.out.empty(), "data prepare: --out is required");
  const auto start = std::chrono::steady_clock::now();
  const BpeTokenizer tokenizer = BpeTokenizer::from_file(o.tokenizer);
  end_of_text_id(tokenizer, o.tokenizer);  // checked before any work
  const std::vector<std::string> files = expand_inputs(o.inputs, o.glob);
  std::vector<Document> docs;
  PrepareResult result;
  DataManifest& m = result.manifest;
  for (const std::string& f : files) {
    std::vector<Document> part = read_documents(f);
    DataSource src{f, static_cast<int64_t>(part.size()), 0};
    for (const Document& d : part) {
      src.bytes += static_cast<int64_t>(d.plain_text().size());
      if (d.is_chat()) m.masked = true;
    }
    m.sources.push_back(src);
    for (Document& d : part) docs.push_back(std::move(d));
  }
  if (m.masked) check_chat_tokens(tokenizer, o.tokenizer);
  const std::vector<Unit> units = units_of(docs);
  SMELT_CHECK(!units.empty(), "data prepare: the inputs hold no text");
  std::vector<bool> val(units.size(), false);
  bool any_val = false;
  for (size_t u = 0; u < units.size(); ++u) {
    val[u] = o.val_fraction > 0 && is_val_unit(static_cast<int64_t>(u), o.val_fraction);
    any_val = any_val || val[u];
  }
  if (o.val_fraction > 0 && !any_val) {
    SMELT_CHECK(units.size() >= 2, "data prepare: the inputs are one block of text; nothing can be held out (use --val-fraction 0)");
    val.back() = true;  // fewer blocks than 1/val_fraction: hold out the last one
  }

  // Encode every unit in parallel (tokens and mask), then lay them out in order.
  std::vector<std::vector<int32_t>> unit_tokens(units.size());
  std::vector<std::vector<uint8_t>> unit_mask(units.size());
  const int32_t eos = end_of_text_id(tokenizer, o.tokenizer);
  parallel_for(0, static_cast<int64_t>(units.size()), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t u = lo; u < hi; ++u) {
      const Unit& unit = units[u];
      auto& tokens = unit_tokens[u];
      auto& mask = unit_mask[u];
      if (unit.doc->is_chat()) {
        render_chat(tokenizer, unit.doc->messages, tokens, mask);
      } else {
        tokenizer.encode_append(std::string_view(unit.doc->text).substr(unit.begin, unit.end - unit.begin), false, tokens);
        if (unit.last) tokens.push_back(eos);
        if (m.masked) mask.assign(tokens.size(), 1);
      }
    }
  });

  TokenShard split_tokens[2];
  for (auto& s : split_tokens) s.vocab_size = static_cast<uint32_t>(tokenizer.vocab_size());
  for (size_t u = 0; u < units.size(); ++u) {
    TokenShard& s = split_tokens[val[u] ? 1 : 0];
    DataSplit& info = val[u] ? m.val : m.train;
    s.tokens.insert(s.tokens.end(), unit_tokens[u].begin(), unit_tokens[u].end());
    s.mask.insert(s.mask.end(), unit_mask[u].begin(), unit_mask[u].end());
    info.blocks += 1;
    info.tokens += static_cast<int64_t>(unit_tokens[u].size());
    info.text_bytes += units[u].doc->is_chat() ? static_cast<int64_t>(units[u].doc->plain_text().size())
                                               : static_cast<int64_t>(units[u].end - units[u].begin);
  }
  m.vocab_size = tokenizer.vocab_size();
  m.val_fraction = o.val_fraction;
  write_dir_atomic(o.out, [&](const std::string& tmp) {
    for (int which = 0; which < 2; ++which) {
      const TokenShard& all = split_tokens[which];
      DataSplit& info = which ? m.val : m.train;
      const std::string prefix = which ? "val" : "train";
      for (int64_t first = 0, k = 0; first < static_cast<int64_t>(all.tokens.size()); first += o.shard_tokens, ++k) {
        const int64_t last = std::min<int64_t>(first + o.shard_tokens, static_cast<int64_t>(all.tokens.size()));
        TokenShard shard;
        shard.vocab_size = all.vocab_size;
        shard.tokens.assign(all.tokens.begin() + first, all.tokens.begin() + last);
        if (!all.mask.empty()) shard.mask.assign(all.mask.begin() + first, all.mask.begin() + last);
        char name[64];
        std::snprintf(name, sizeof name, "%s-%05ld.tok", prefix.c_str(), static_cast<long>(k));
        write_token_shard(tmp + "/" + name, shard);
        info.shards.push_back(name);
      }
    }
    write_file_atomic(tmp + "/tokenizer.json", read_file(o.tokenizer));
    write_file_atomic(tmp + "/tokenizer_config.json", tokenizer_config_json());
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    json sources = json::array();
    for (const DataSource& s : m.sources) sources.push_back({{"path", s.path}, {"documents", s.documents}, {"bytes", s.bytes}});
    const json manifest = {{"format", kFormat},        {"version", m.version},  {"vocab_size", m.vocab_size},
                           {"tokenizer", "tokenizer.json"}, {"masked", m.masked}, {"val_fraction", m.val_fraction},
                           {"seconds", result.seconds}, {"splits", {{"train", split_json(m.train)}, {"val", split_json(m.val)}}},
                           {"sources", sources}};
    write_file_atomic(tmp + "/manifest.json", manifest.dump(2) + "\n");
  }, "manifest.json");
  return result;
}

}  // namespace smelt
