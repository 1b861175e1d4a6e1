// Helpers shared by the test suites.
#pragma once
#include <gtest/gtest.h>

#include <cmath>

#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "hwy/targets.h"
#include "models/config.h"
#include "optim/trainer.h"
#include "runtime/error.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace smelt::testing {

// Runs `body` once for every SIMD target this build compiled and this CPU can run (AVX3_DL and
// AVX3 where it has AVX-512, AVX2, SSE4, SSSE3 and the emulated 128-bit one), so the narrower
// targets' code paths (4-lane vectors, the scalar fallbacks) are checked too, not only the one
// dispatch picks on this machine.
inline void for_each_cpu_target(const std::function<void()>& body) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(std::string("SIMD target ") + hwy::TargetName(target));
    body();
    if (::testing::Test::HasFatalFailure()) break;
  }
  hwy::SetSupportedTargetsForTest(0);  // back to the best target
}

inline Tensor rand_param(const Shape& shape, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  Philox rng(seed);
  Tensor t = Tensor::uniform(shape, rng, lo, hi);
  t.set_requires_grad(true);
  return t;
}

// A small dense Llama-style configuration for tests (MoE fields are set by the caller).
inline ModelConfig small_config(int64_t vocab, int64_t hidden, int64_t ffn, int64_t layers, int64_t heads, int64_t kv_heads,
                                int64_t max_positions = 64) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = ffn;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.max_position_embeddings = max_positions;
  return c;
}

// A [rows, cols] batch of token ids below `vocab` in a fixed pattern shifted by `shift`; every
// `skip`-th target is ignored (−100; skip 0: none). On `device`.
inline Batch pattern_batch(int64_t rows, int64_t cols, int64_t vocab, int64_t shift, int64_t skip, Device device) {
  std::vector<int64_t> ids, targets;
  for (int64_t i = 0; i < rows * cols; ++i) {
    ids.push_back((i * 7 + shift * 13 + 3) % vocab);
    targets.push_back(skip > 0 && i % skip == skip - 1 ? -100 : (i * 11 + shift * 5 + 1) % vocab);
  }
  return Batch{Tensor::from_ints(ids, {rows, cols}, DType::I64, device), Tensor::from_ints(targets, {rows, cols}, DType::I64, device), Tensor(),
               {}, Tensor()};
}

inline std::string write_temp(const std::string& name, const std::string& text) {
  std::string path = ::testing::TempDir() + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// Expects fn to throw smelt::Error whose message contains every needle (file names, fields).
inline void expect_error_mentions(const std::function<void()>& fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "expected an error mentioning " << (needles.empty() ? "" : needles[0]);
  } catch (const Error& e) {
    for (const auto& n : needles) EXPECT_NE(e.message().find(n), std::string::npos) << "'" << n << "' not in: " << e.message();
  }
}

inline std::string fixture_path(const std::string& name) { return std::string(SMELT_FIXTURE_DIR) + "/" + name; }

#define EXPECT_GRADCHECK(fn, inputs, ...)                                    \
  do {                                                                       \
    auto _r = ::smelt::gradcheck(fn, inputs __VA_OPT__(, ) __VA_ARGS__);     \
    EXPECT_TRUE(_r.ok) << _r.first_failure << " (max abs error " << _r.max_abs_error << ")"; \
    EXPECT_GT(_r.checked, 0);                                                \
  } while (0)

}  // namespace smelt::testing
