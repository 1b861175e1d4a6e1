// The Llama model against an independent PyTorch implementation (tests/fixtures/make_tiny_llama.py):
// same weights and batch → same logits, loss, every parameter gradient, and 10 AdamW steps.
#include "io/config_json.h"
#include "io/safetensors.h"
#include "ops/ops.h"
#include "optim/optimizer.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

struct Fixture {
  ModelConfig config;
  SafetensorsFile file;
};

Fixture load_fixture() {
  Fixture f;
  f.config = read_model_config(testing::fixture_path("tiny_llama_config.json"));
  f.file = read_safetensors(testing::fixture_path("tiny_llama.safetensors"));
  return f;
}

Transformer model_from(const Fixture& f) {
  NamedTensors params;
  for (const auto& [name, t] : f.file.tensors)
    if (name.rfind("model.", 0) == 0 || name == "lm_head.weight") params.push_back({name, t});
  return Transformer::from_tensors(f.config, params, "tiny_llama.safetensors");
}

Tensor loss_of(const Transformer& m, const Fixture& f) {
  Tensor logits = m.forward(f.file.at("input_ids", "fixture"));
  return ops::cross_entropy(ops::reshape(logits, {-1, f.config.vocab_size}), ops::reshape(f.file.at("targets", "fixture"), {-1}));
}

// max |a − b| ≤ rtol · max|b| (a relative tolerance on the tensor's scale).
void expect_allclose(const Tensor& got, const Tensor& want, double rtol, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  auto g = got.to_vector(), w = want.to_vector();
  double scale = 0, err = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    scale = std::max(scale, std::fabs(static_cast<double>(w[i])));
    err = std::max(err, std::fabs(static_cast<double>(g[i]) - w[i]));
  }
  EXPECT_LE(err, rtol * scale) << what << ": max abs error " << err << " on scale " << scale;
}

TEST(LlamaOracle, LogitsAndLossMatchPyTorch) {
  Fixture f = load_fixture();
  Transformer m = model_from(f);
  NoGradGuard no_grad;
  Tensor logits = m.forward(f.file.at("input_ids", "fixture"));
  expect_allclose(logits, f.file.at("logits", "fixture"), 1e-5, "logits");
  EXPECT_NEAR(loss_of(m, f).item(), f.file.at("loss", "fixture").item(), 1e-5);
}

TEST(LlamaOracle, EveryParameterGradientMatchesPyTorch) {
  Fixture f = load_fixture();
  Transformer m = model_from(f);
  loss_of(m, f).backward();
  int checked = 0;
  for (const auto& [name, p] : m.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    expect_allclose(p.grad(), f.file.at("grad." + name, "fixture"), 1e-4, "grad." + name);
    ++checked;
  }
  EXPECT_EQ(checked, 21);
}

TEST(LlamaOracle, TenAdamWStepsMatchPyTorch) {
  Fixture f = load_fixture();
  Transformer m = model_from(f);
  AdamW opt(m.parameters(), 0.9f, 0.95f, 1e-8f, 0.1f);
  std::vector<float> want = f.file.at("adamw_losses", "fixture").to_vector();
  for (int step = 0; step < 10; ++step) {
    opt.zero_grad();
    Tensor loss = loss_of(m, f);
    // losses drift apart slowly as f32 round-off compounds through the updates
    EXPECT_NEAR(loss.item(), want[step], 1e-4 * (1 + step)) << "step " << step;
    loss.backward();
    opt.step(1e-2f);
  }
  for (const auto& [name, p] : m.named_parameters())
    if (const Tensor* final = f.file.find("final." + name)) expect_allclose(p, *final, 1e-4, "final." + name);
}

}  // namespace
}  // namespace smelt
