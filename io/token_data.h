// A token stream to train or evaluate on: raw bytes of a text file (vocabulary 256), a text file
// encoded with a tokenizer, or a split of a prepared data directory (token shards from
// `smelt data prepare`, see io/prepared_data.h). Training batches are random windows drawn from
// a Philox stream, so the stream's (seed, offset) is the data cursor a checkpoint stores;
// evaluation batches are fixed, evenly spaced windows so every run scores the same text. With a
// loss mask (instruct data) targets whose mask is 0 are ignored (-100).
#pragma once
#include <string>
#include <vector>

#include "io/bpe_tokenizer.h"
#include "optim/trainer.h"
#include "runtime/rng.h"

namespace smelt {

class TokenDataset {
 public:
  // A text file as bytes; throws naming it when missing, unreadable, or shorter than min_tokens.
  static TokenDataset from_text_file(const std::string& path, int64_t min_tokens = 2);
  // A text file encoded with `tokenizer` (no special tokens are read from the text).
  static TokenDataset from_text_file(const std::string& path, const BpeTokenizer& tokenizer, int64_t min_tokens = 2);
  static TokenDataset from_bytes(const std::string& bytes, std::string name);
  static TokenDataset from_tokens(std::vector<int32_t> tokens, std::vector<uint8_t> mask, std::string name, int64_t text_bytes,
                                  int64_t vocab_size);
  // Split "train" or "val" of a prepared data directory (shards checked against the manifest).
  static TokenDataset from_prepared(const std::string& dir, const std::string& split, int64_t min_tokens = 2);

  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  bool masked() const { return !mask_.empty(); }
  const std::vector<int32_t>& tokens() const { return tokens_; }
  const std::string& name() const { return name_; }
  // Bytes of text the tokens stand for (bits per byte = loss · tokens / (bytes · ln 2)).
  int64_t text_bytes() const { return text_bytes_; }
  // Ids are below this (256 for bytes; the tokenizer's vocabulary otherwise).
  int64_t vocab_size() const { return vocab_size_; }
  // Tokens [begin, end) as a dataset of their own (text bytes prorated).
  TokenDataset slice(int64_t begin, int64_t end, std::string name) const;

  // Inputs are tokens [s, s+T), targets [s+1, s+T+1) for batch random starts s.
  Batch random_batch(int64_t batch, int64_t seq_len, Philox& rng) const;
  // Random windows among the disjoint ones (starts are multiples of seq_len): what a run uses
  // when per-window data must line up, as with a cached teacher.
  Batch random_window_batch(int64_t batch, int64_t seq_len, Philox& rng) const;
  // The i-th of the fixed evaluation batches (windows spread evenly over the data).
  Batch eval_batch(int64_t i, int64_t batches, int64_t batch, int64_t seq_len) const;
  // Disjoint windows [k·T, k·T + T] for k in [first, first + count): a full pass over the data.
  Batch window_batch(int64_t first, int64_t count, int64_t seq_len) const;
  // Number of disjoint windows of seq_len + 1 tokens.
  int64_t windows(int64_t seq_len) const { return (size() - 1) / seq_len; }
  // Throws naming the data when it is shorter than one window of seq_len + 1 tokens.
  void check_fits(int64_t seq_len) const;
  // Packed documents: with a separator (the tokenizer's <|eos|>), every batch carries key_start,
  // so a token attends only to its own document (the one that began after the last separator).
  void set_document_separator(int32_t token) { separator_ = token; }

 private:
  Batch batch_from_starts(const std::vector<int64_t>& starts, int64_t seq_len) const;
  std::vector<int32_t> tokens_;
  std::vector<uint8_t> mask_;
  std::string name_;
  int64_t text_bytes_ = 0, vocab_size_ = 256;
  int32_t separator_ = -1;
};

}  // namespace smelt
