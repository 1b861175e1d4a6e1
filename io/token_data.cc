#include "io/token_data.h"

#include "io/files.h"
#include "io/prepared_data.h"

namespace smelt {

TokenDataset TokenDataset::from_text_file(const std::string& path, int64_t min_tokens) {
  const std::string bytes = read_file(path);
  SMELT_CHECK(!bytes.empty(), path, ": data file is empty");
  TokenDataset d = from_bytes(bytes, path);
  SMELT_CHECK(d.size() >= min_tokens, path, ": data file has ", d.size(), " bytes, fewer than the ", min_tokens,
              " one sequence needs (lower seq_len or add data)");
  return d;
}

TokenDataset TokenDataset::from_text_file(const std::string& path, const BpeTokenizer& tokenizer, int64_t min_tokens) {
  const std::string bytes = read_file(path);
  SMELT_CHECK(!bytes.empty(), path, ": data file is empty");
  TokenDataset d = from_tokens(tokenizer.encode(bytes), {}, path, static_cast<int64_t>(bytes.size()), tokenizer.vocab_size());
  SMELT_CHECK(d.size() >= min_tokens, path, ": data file has ", d.size(), " tokens, fewer than the ", min_tokens,
              " one sequence needs (lower seq_len or add data)");
  return d;
}

TokenDataset TokenDataset::from_bytes(const std::string& bytes, std::string name) {
  TokenDataset d;
  d.tokens_.assign(reinterpret_cast<const uint8_t*>(bytes.data()), reinterpret_cast<const uint8_t*>(bytes.data()) + bytes.size());
  d.name_ = std::move(name);
  d.text_bytes_ = static_cast<int64_t>(bytes.size());
  d.vocab_size_ = 256;
  return d;
}

TokenDataset TokenDataset::from_tokens(std::vector<int32_t> tokens, std::vector<uint8_t> mask, std::string name, int64_t text_bytes,
                                       int64_t vocab_size) {
  SMELT_CHECK(mask.empty() || mask.size() == tokens.size(), name, ": ", mask.size(), " mask bytes for ", tokens.size(), " tokens");
  TokenDataset d;
  d.tokens_ = std::move(tokens);
  d.mask_ = std::move(mask);
  d.name_ = std::move(name);
  d.text_bytes_ = text_bytes;
  d.vocab_size_ = vocab_size;
  return d;
}

TokenDataset TokenDataset::from_prepared(const std::string& dir, const std::string& split, int64_t min_tokens) {
  const DataManifest m = read_data_manifest(dir);
  const DataSplit& s = m.split(split);
  TokenShard all = read_split_tokens(dir, m, split);
  TokenDataset d = from_tokens(std::move(all.tokens), std::move(all.mask), dir + " (" + split + ")", s.text_bytes, m.vocab_size);
  SMELT_CHECK(d.size() >= min_tokens, dir, ": split \"", split, "\" has ", d.size(), " tokens, fewer than the ", min_tokens,
              " one sequence needs");
  return d;
}

TokenDataset TokenDataset::slice(int64_t begin, int64_t end, std::string name) const {
  SMELT_CHECK(0 <= begin && begin <= end && end <= size(), name_, ": slice [", begin, ", ", end, ") outside [0, ", size(), ")");
  TokenDataset d;
  d.tokens_.assign(tokens_.begin() + begin, tokens_.begin() + end);
  if (masked()) d.mask_.assign(mask_.begin() + begin, mask_.begin() + end);
  d.name_ = std::move(name);
  d.text_bytes_ = size() > 0 ? static_cast<int64_t>(static_cast<double>(text_bytes_) * static_cast<double>(end - begin) / size()) : 0;
  d.vocab_size_ = vocab_size_;
  d.separator_ = separator_;
  return d;
}

void TokenDataset::check_fits(int64_t seq_len) const {
  SMELT_CHECK(size() >= seq_len + 1, name_, ": ", size(), " tokens is too short for seq_len ", seq_len);
}

Batch TokenDataset::batch_from_starts(const std::vector<int64_t>& starts, int64_t seq_len) const {
  const int64_t B = static_cast<int64_t>(starts.size());
  Tensor ids = Tensor::empty({B, seq_len}, DType::I64), targets = Tensor::empty({B, seq_len}, DType::I64);
  int64_t* pi = ids.data<int64_t>();
  int64_t* pt = targets.data<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < seq_len; ++t) {
      const int64_t s = starts[b] + t;
      pi[b * seq_len + t] = tokens_[s];
      pt[b * seq_len + t] = masked() && !mask_[s + 1] ? -100 : tokens_[s + 1];
    }
  Batch batch{ids, targets, Tensor(), starts, Tensor()};
  if (separator_ >= 0) {
    batch.key_start = Tensor::empty({B, seq_len}, DType::I64);
    int64_t* pk = batch.key_start.data<int64_t>();
    for (int64_t b = 0; b < B; ++b) {
      int64_t first = 0;
      for (int64_t t = 0; t < seq_len; ++t) {
        if (t > 0 && tokens_[starts[b] + t - 1] == separator_) first = t;  // a new document begins after the separator
        pk[b * seq_len + t] = first;
      }
    }
  }
  return batch;
}

Batch TokenDataset::random_batch(int64_t batch, int64_t seq_len, Philox& rng) const {
  check_fits(seq_len);
  const uint64_t span = static_cast<uint64_t>(size() - seq_len);  // valid starts: [0, size − T − 1]
  std::vector<int64_t> starts(batch);
  for (int64_t b = 0; b < batch; ++b) starts[b] = static_cast<int64_t>(rng.next_u64() % span);
  return batch_from_starts(starts, seq_len);
}

Batch TokenDataset::random_window_batch(int64_t batch, int64_t seq_len, Philox& rng) const {
  check_fits(seq_len);
  const uint64_t n = static_cast<uint64_t>(windows(seq_len));
  std::vector<int64_t> starts(batch);
  for (int64_t b = 0; b < batch; ++b) starts[b] = static_cast<int64_t>(rng.next_u64() % n) * seq_len;
  return batch_from_starts(starts, seq_len);
}

Batch TokenDataset::window_batch(int64_t first, int64_t count, int64_t seq_len) const {
  SMELT_CHECK(first >= 0 && first + count <= windows(seq_len), name_, ": windows [", first, ", ", first + count, ") past the ",
              windows(seq_len), " available");
  std::vector<int64_t> starts(count);
  for (int64_t k = 0; k < count; ++k) starts[k] = (first + k) * seq_len;
  return batch_from_starts(starts, seq_len);
}

Batch TokenDataset::eval_batch(int64_t i, int64_t batches, int64_t batch, int64_t seq_len) const {
  check_fits(seq_len);
  const int64_t total = batches * batch;
  const int64_t span = size() - seq_len - 1;
  std::vector<int64_t> starts(batch);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t k = i * batch + b;
    starts[b] = total > 1 ? span * k / (total - 1) : 0;
  }
  return batch_from_starts(starts, seq_len);
}

}  // namespace smelt
