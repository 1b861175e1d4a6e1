// Optimizers, schedule, clipping and gradient accumulation against hand-computed values.
#include "ops/ops.h"
#include "optim/optimizer.h"
#include "optim/trainer.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

Tensor param(std::vector<float> v) {
  Tensor t = Tensor::from_vector(v, {static_cast<int64_t>(v.size())});
  t.set_requires_grad(true);
  return t;
}

TEST(Optim, AdamWFirstStepIsSignTimesLrPlusDecay) {
  // Step 1: m̂ = g, v̂ = g², so the update is lr·g/(|g| + eps) after decaying p by (1 − lr·wd).
  Tensor p = param({1.0f, -2.0f});
  p.set_grad(Tensor::from_vector({0.5f, -4.0f}, {2}));
  AdamW opt({p}, 0.9f, 0.999f, 1e-8f, 0.1f);
  opt.step(0.01f);
  auto v = p.to_vector();
  EXPECT_NEAR(v[0], 1.0 * (1 - 0.001) - 0.01, 1e-6);
  EXPECT_NEAR(v[1], -2.0 * (1 - 0.001) + 0.01, 1e-6);
}

TEST(Optim, AdamWAndClippingOverManyPiecesMatchScalar) {
  // 40000 values span three pieces of the one-pass update: each piece's offset into p, m, v and
  // the gradient must be right. Two steps against the update written out in double, with the
  // gradient clipped to norm 1 first.
  const int64_t n = 40000;
  std::vector<float> p0(n), g0(n);
  for (int64_t i = 0; i < n; ++i) {
    p0[i] = std::sin(0.37 * i);
    g0[i] = std::cos(0.11 * i) * (1 + i % 7);
  }
  Tensor p = param(p0);
  AdamW opt({p}, 0.9f, 0.999f, 1e-8f, 0.1f);
  std::vector<double> rp(p0.begin(), p0.end()), rm(n, 0.0), rv(n, 0.0);
  for (int step = 1; step <= 2; ++step) {
    p.set_grad(Tensor::from_vector(g0, {n}));
    double ss = 0;
    for (float g : g0) ss += static_cast<double>(g) * g;
    EXPECT_NEAR(clip_grad_norm({p}, 1.0f), std::sqrt(ss), 1e-4 * std::sqrt(ss));
    const double clip = 1.0 / (std::sqrt(ss) + 1e-6);
    opt.step(0.01f);
    const double bc1 = 1 - std::pow(0.9, step), bc2 = 1 - std::pow(0.999, step);
    for (int64_t i = 0; i < n; ++i) {
      const double g = g0[i] * clip;
      rm[i] = 0.9 * rm[i] + 0.1 * g;
      rv[i] = 0.999 * rv[i] + 0.001 * g * g;
      rp[i] = rp[i] * (1 - 0.01 * 0.1) - 0.01 / bc1 * rm[i] / (std::sqrt(rv[i] / bc2) + 1e-8);
    }
    const std::vector<float> got = p.to_vector();
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(got[i], rp[i], 2e-5) << "step " << step << " element " << i;
  }
}

TEST(Optim, ClippingScalesHugeFiniteGradients) {
  // Squares beyond f32's range: the norm is still finite and the gradient is clipped.
  Tensor a = param({0, 0});
  a.set_grad(Tensor::from_vector({3e20f, 4e20f}, {2}));
  EXPECT_NEAR(clip_grad_norm({a}, 1.0f), 5e20, 1e14);
  EXPECT_NEAR(a.grad().to_vector()[0], 0.6, 1e-5);
  EXPECT_NEAR(a.grad().to_vector()[1], 0.8, 1e-5);
}

TEST(Optim, SgdMomentumMatchesRecurrence) {
  Tensor p = param({1.0f});
  SGD opt({p}, 0.9f, 0.0f);
  // g = 1 each step: buf = 1, 1.9, 2.71; p = 1 − 0.1·(1 + 1.9 + 2.71)
  for (int i = 0; i < 3; ++i) {
    p.set_grad(Tensor::from_vector({1.0f}, {1}));
    opt.step(0.1f);
  }
  EXPECT_NEAR(p.item(), 1.0 - 0.1 * (1 + 1.9 + 2.71), 1e-6);
}

TEST(Optim, ClipGradNormScalesToMaxNorm) {
  Tensor a = param({0, 0}), b = param({0});
  a.set_grad(Tensor::from_vector({3.0f, 0.0f}, {2}));
  b.set_grad(Tensor::from_vector({4.0f}, {1}));
  EXPECT_NEAR(clip_grad_norm({a, b}, 1.0f), 5.0, 1e-6);
  EXPECT_NEAR(a.grad().to_vector()[0], 0.6, 1e-5);
  EXPECT_NEAR(b.grad().to_vector()[0], 0.8, 1e-5);
  b.set_grad(Tensor::from_vector({NAN}, {1}));
  EXPECT_THROW(clip_grad_norm({a, b}, 1.0f), Error);
}

TEST(Optim, WarmupThenCosineToMinimum) {
  LrSchedule s{1.0f, 0.1f, 10, 110};
  EXPECT_NEAR(s.at(0), 0.1, 1e-6);
  EXPECT_NEAR(s.at(9), 1.0, 1e-6);
  EXPECT_NEAR(s.at(10), 1.0, 1e-6);
  EXPECT_NEAR(s.at(60), 0.55, 1e-5);  // halfway through the cosine
  EXPECT_NEAR(s.at(110), 0.1, 1e-6);
}

TEST(Optim, GradientAccumulationEqualsOneLargeBatch) {
  ModelConfig c;
  c.vocab_size = 16; c.hidden_size = 16; c.intermediate_size = 32; c.num_hidden_layers = 1;
  c.num_attention_heads = 2; c.num_key_value_heads = 1; c.max_position_embeddings = 16;
  std::vector<int64_t> ids(4 * 6), tgt(4 * 6);
  for (size_t i = 0; i < ids.size(); ++i) { ids[i] = (i * 7) % 16; tgt[i] = (i * 5 + 3) % 16; }
  Batch whole{Tensor::from_ints(ids, {4, 6}), Tensor::from_ints(tgt, {4, 6}), Tensor()};
  Batch first{ops::slice(whole.ids, 0, 0, 2), ops::slice(whole.targets, 0, 0, 2), Tensor()};
  Batch second{ops::slice(whole.ids, 0, 2, 4), ops::slice(whole.targets, 0, 2, 4), Tensor()};
  TrainConfig tc;
  tc.grad_clip = 0;  // compare raw updates
  Transformer m1 = Transformer::create(c, 5), m2 = Transformer::create(c, 5);
  Trainer t1(m1, tc), t2(m2, tc);
  StepMetrics a = t1.step(0, {whole});
  StepMetrics b = t2.step(0, {first, second});
  EXPECT_NEAR(a.loss, b.loss, 1e-5);
  EXPECT_NEAR(a.grad_norm, b.grad_norm, 1e-4 * a.grad_norm);
  auto p1 = m1.parameters(), p2 = m2.parameters();
  for (size_t i = 0; i < p1.size(); ++i) {
    auto x = p1[i].to_vector(), y = p2[i].to_vector();
    for (size_t j = 0; j < x.size(); ++j) ASSERT_NEAR(x[j], y[j], 1e-6) << "parameter " << i;
  }
}

}  // namespace
}  // namespace smelt

namespace smelt {
namespace {

// ZeRO-1's ownership: whole tensors, largest first to the least-loaded rank; every parameter
// has one owner, the loads are balanced, and one rank owns everything.
TEST(ZeroOwners, BalancedWholeTensors) {
  std::vector<Tensor> params = {Tensor::zeros({10}), Tensor::zeros({40}), Tensor::zeros({30}), Tensor::zeros({20}), Tensor::zeros({5})};
  const std::vector<int> owners = zero_owners(params, 2);
  // 40 → rank 0, 30 → 1, 20 → 1 (30 < 40), 10 → 0 (40 < 50), 5 → 0 (a tie goes to the lower rank).
  EXPECT_EQ(owners, (std::vector<int>{0, 0, 1, 1, 0}));
  EXPECT_EQ(zero_owners(params, 1), std::vector<int>(5, 0));
}

}  // namespace
}  // namespace smelt
