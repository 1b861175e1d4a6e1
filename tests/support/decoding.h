// Helpers shared by the inference-weight suites (bf16, quantised): token ids, KV-cache decoding
// token by token, and the one-step recipe their refusal-to-train checks use.
#pragma once
#include <vector>

#include "models/transformer.h"
#include "ops/ops.h"
#include "optim/trainer.h"

namespace smelt::testing {

// batch × seq ids spread over the vocabulary, the same every call.
inline Tensor some_ids(int64_t vocab, int64_t batch, int64_t seq) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < batch * seq; ++i) ids.push_back((i * 17 + 5) % vocab);
  return Tensor::from_ints(ids, {batch, seq});
}

// The logits of ids [1, T] computed through a KV cache: the first `prompt` tokens in one
// forward, then one token at a time (what generation does), concatenated.
inline std::vector<float> cached_logits(const Transformer& m, const Tensor& ids, int64_t prompt) {
  const int64_t T = ids.size(1);
  KVCache cache = m.make_cache(1, T + 1);
  std::vector<float> stepped = m.forward(ops::slice(ids, 1, 0, prompt), &cache).to_vector();
  for (int64_t t = prompt; t < T; ++t) {
    const std::vector<float> one = m.forward(ops::slice(ids, 1, t, t + 1), &cache).to_vector();
    stepped.insert(stepped.end(), one.begin(), one.end());
  }
  return stepped;
}

// One step of one 4-token row: enough for a Trainer to be built (and refuse, or not).
inline TrainConfig one_step_config() {
  TrainConfig tc;
  tc.steps = 1;
  tc.batch_size = 1;
  tc.seq_len = 4;
  return tc;
}

}  // namespace smelt::testing
