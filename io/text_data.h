// Text as a stream of byte tokens (vocabulary 256) until the BPE tokenizer lands. Training
// batches are random windows drawn from a Philox stream (reproducible from the seed and step);
// evaluation batches are fixed, evenly spaced windows so every run scores the same text.
#pragma once
#include <string>
#include <vector>

#include "optim/trainer.h"
#include "runtime/rng.h"

namespace smelt {

class ByteDataset {
 public:
  // Reads a file; throws naming it when missing, unreadable, or shorter than min_bytes.
  static ByteDataset from_file(const std::string& path, int64_t min_bytes = 2);
  static ByteDataset from_bytes(std::string bytes, std::string name);

  int64_t size() const { return static_cast<int64_t>(bytes_.size()); }
  const std::string& bytes() const { return bytes_; }
  const std::string& name() const { return name_; }
  // Inputs are bytes [s, s+T), targets [s+1, s+T+1) for batch random starts s.
  Batch random_batch(int64_t batch, int64_t seq_len, Philox& rng) const;
  // The i-th of the fixed evaluation batches (windows spread evenly over the data).
  Batch eval_batch(int64_t i, int64_t batches, int64_t batch, int64_t seq_len) const;
  // Disjoint windows [k·T, k·T + T] for k in [first, first + count): a full pass over the data.
  Batch window_batch(int64_t first, int64_t count, int64_t seq_len) const;
  // Number of disjoint windows of seq_len + 1 bytes.
  int64_t windows(int64_t seq_len) const { return (size() - 1) / seq_len; }

 private:
  Batch batch_from_starts(const std::vector<int64_t>& starts, int64_t seq_len) const;
  std::string bytes_;
  std::string name_;
};

}  // namespace smelt
