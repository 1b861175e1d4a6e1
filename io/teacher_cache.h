// A teacher's top-K predictions, computed once, so distillation can replay them with no teacher
// in memory (`smelt distill --teacher-topk K --cache DIR`). The cache covers the disjoint
// windows of seq_len + 1 tokens of one dataset (TokenDataset::window_batch): for window w and
// position t, the K most likely next tokens after the teacher read the window up to t, with
// their log-probabilities at the distillation temperature.
//   DIR/teacher_cache.json      format, version, teacher, data name and size, seq_len, K, temperature
//   DIR/cache-00000.safetensors "ids" I32 [w, seq_len, K], "logp" F32 [w, seq_len, K] (256 windows per file)
#pragma once
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "io/token_data.h"
#include "models/transformer.h"

namespace smelt {

struct TeacherCacheInfo {
  std::string teacher, data;
  int64_t data_tokens = 0, seq_len = 0, top_k = 0, windows = 0;
  double temperature = 1.0;
};

// Runs the teacher (no grad) over every window of `data` and writes DIR atomically.
TeacherCacheInfo write_teacher_cache(const Transformer& teacher, const std::string& teacher_name, const TokenDataset& data,
                                     int64_t seq_len, int64_t top_k, double temperature, int64_t batch, const std::string& dir);

class TeacherCache {
 public:
  // Opens DIR and checks it was made for this data, window length and temperature.
  static TeacherCache open(const std::string& dir, const TokenDataset& data, int64_t seq_len, double temperature);
  const TeacherCacheInfo& info() const { return info_; }
  // The cached predictions for windows starting at `starts` (each a multiple of seq_len):
  // ids [B·T, K] (I64) and logp [B·T, K].
  void lookup(const std::vector<int64_t>& starts, Tensor& ids, Tensor& logp) const;

 private:
  std::string dir_;
  TeacherCacheInfo info_;
  std::vector<SafetensorsFile> files_;
};

}  // namespace smelt
