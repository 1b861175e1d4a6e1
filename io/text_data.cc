#include "io/text_data.h"

#include "io/files.h"

namespace smelt {

ByteDataset ByteDataset::from_file(const std::string& path, int64_t min_bytes) {
  std::string bytes = read_file(path);
  SMELT_CHECK(!bytes.empty(), path, ": data file is empty");
  SMELT_CHECK(static_cast<int64_t>(bytes.size()) >= min_bytes, path, ": data file has ", bytes.size(),
              " bytes, fewer than the ", min_bytes, " one sequence needs (lower seq_len or add data)");
  return from_bytes(std::move(bytes), path);
}

ByteDataset ByteDataset::from_bytes(std::string bytes, std::string name) {
  ByteDataset d;
  d.bytes_ = std::move(bytes);
  d.name_ = std::move(name);
  return d;
}

Batch ByteDataset::batch_from_starts(const std::vector<int64_t>& starts, int64_t seq_len) const {
  const int64_t B = static_cast<int64_t>(starts.size());
  Tensor ids = Tensor::empty({B, seq_len}, DType::I64), targets = Tensor::empty({B, seq_len}, DType::I64);
  int64_t* pi = ids.data<int64_t>();
  int64_t* pt = targets.data<int64_t>();
  const auto* p = reinterpret_cast<const uint8_t*>(bytes_.data());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < seq_len; ++t) {
      pi[b * seq_len + t] = p[starts[b] + t];
      pt[b * seq_len + t] = p[starts[b] + t + 1];
    }
  return {ids, targets, Tensor()};
}

Batch ByteDataset::random_batch(int64_t batch, int64_t seq_len, Philox& rng) const {
  SMELT_CHECK(size() >= seq_len + 1, name_, ": ", size(), " bytes is too short for seq_len ", seq_len);
  const uint64_t span = static_cast<uint64_t>(size() - seq_len);  // valid starts: [0, size − T − 1]
  std::vector<int64_t> starts(batch);
  for (int64_t b = 0; b < batch; ++b) starts[b] = static_cast<int64_t>(rng.next_u64() % span);
  return batch_from_starts(starts, seq_len);
}

Batch ByteDataset::window_batch(int64_t first, int64_t count, int64_t seq_len) const {
  SMELT_CHECK(first >= 0 && first + count <= windows(seq_len), name_, ": windows [", first, ", ", first + count, ") past the ",
              windows(seq_len), " available");
  std::vector<int64_t> starts(count);
  for (int64_t k = 0; k < count; ++k) starts[k] = (first + k) * seq_len;
  return batch_from_starts(starts, seq_len);
}

Batch ByteDataset::eval_batch(int64_t i, int64_t batches, int64_t batch, int64_t seq_len) const {
  SMELT_CHECK(size() >= seq_len + 1, name_, ": ", size(), " bytes is too short for seq_len ", seq_len);
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
