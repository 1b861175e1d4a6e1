// Distillation: every divergence against values computed by hand in the test, gradchecks, the
// top-K form against the dense one, masked rows, the teacher cache against the teacher, the
// hidden-state losses, and students made from a teacher's layers.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "autograd/grad_mode.h"
#include "io/teacher_cache.h"
#include "models/student_init.h"
#include "models/upcycle.h"
#include "ops/distill.h"
#include "optim/distill.h"
#include "ops/ops.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

using ops::Divergence;
using testing::expect_error_mentions;
using testing::rand_param;

std::vector<double> softmax(const std::vector<double>& z, double T) {
  double mx = -1e300, s = 0;
  for (double v : z) mx = std::max(mx, v / T);
  std::vector<double> p;
  for (double v : z) s += std::exp(v / T - mx);
  for (double v : z) p.push_back(std::exp(v / T - mx) / s);
  return p;
}

// The textbook formulas, written out plainly.
double by_hand(Divergence kind, const std::vector<double>& pt, const std::vector<double>& ps, double beta) {
  double d = 0;
  for (size_t i = 0; i < pt.size(); ++i) {
    const double m = beta * pt[i] + (1 - beta) * ps[i];
    switch (kind) {
      case Divergence::ForwardKL: d += pt[i] * std::log(pt[i] / ps[i]); break;
      case Divergence::ReverseKL: d += ps[i] * std::log(ps[i] / pt[i]); break;
      case Divergence::JensenShannon: d += beta * pt[i] * std::log(pt[i] / m) + (1 - beta) * ps[i] * std::log(ps[i] / m); break;
      case Divergence::SkewKL: d += pt[i] * std::log(pt[i] / m); break;
      case Divergence::TotalVariation: d += 0.5 * std::fabs(pt[i] - ps[i]); break;
    }
  }
  return d;
}

const Divergence kAll[] = {Divergence::ForwardKL, Divergence::ReverseKL, Divergence::JensenShannon, Divergence::SkewKL,
                           Divergence::TotalVariation};

TEST(Distill, EveryLossMatchesItsFormulaComputedByHand) {
  // Two rows of three logits; the second row is masked out of the mean.
  const std::vector<double> s = {1.0, 0.0, -1.0}, t = {0.5, 0.2, -0.3};
  const Tensor student = Tensor::from_vector({1.0f, 0.0f, -1.0f, 3.0f, 3.0f, 3.0f}, {2, 3});
  const Tensor teacher = Tensor::from_vector({0.5f, 0.2f, -0.3f, -4.0f, 0.0f, 4.0f}, {2, 3});
  const Tensor mask = Tensor::from_vector({1.0f, 0.0f}, {2});
  for (Divergence kind : kAll)
    for (double T : {1.0, 2.0}) {
      const double beta = ops::default_beta(kind);
      const double scale = kind == Divergence::TotalVariation ? 1.0 : T * T;
      const double want = scale * by_hand(kind, softmax(t, T), softmax(s, T), beta);
      const double got = ops::distill_loss(student, teacher, kind, T, beta, mask).item();
      EXPECT_NEAR(got, want, 1e-6 + 1e-5 * std::fabs(want)) << ops::divergence_name(kind) << " T=" << T;
      EXPECT_GT(want, 0.0);
    }
  EXPECT_EQ(ops::parse_divergence("jsd"), Divergence::JensenShannon);
  expect_error_mentions([] { ops::parse_divergence("kl"); }, {"unknown distillation loss", "fkl, rkl, jsd, skl, tvd"});
}

TEST(Distill, GradientsMatchFiniteDifferences) {
  const Tensor teacher = rand_param({4, 7}, 3, -2.0f, 2.0f).set_requires_grad(false);
  const Tensor ids = Tensor::from_ints({0, 3, 6, 1, 2, 5, 4, 0, 6, 2, 1, 3}, {4, 3});
  Tensor lt_top;
  {
    NoGradGuard g;
    lt_top = ops::gather(ops::log_softmax(ops::mul(teacher, 0.5f)), 1, ids);
  }
  for (Divergence kind : kAll) {
    const double beta = ops::default_beta(kind);
    EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return ops::distill_loss(in[0], teacher, kind, 2.0, beta); },
                     {rand_param({4, 7}, 11, -2.0f, 2.0f)});
    EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return ops::distill_loss_topk(in[0], ids, lt_top, kind, 2.0, beta); },
                     {rand_param({4, 7}, 12, -2.0f, 2.0f)});
  }
}

TEST(Distill, TopKWithAllButOneTokenEqualsTheDenseLoss) {
  // With K = V − 1 the "everything else" bucket is exactly the one remaining token.
  const int64_t N = 5, V = 6, K = V - 1;
  const Tensor student = rand_param({N, V}, 21, -3.0f, 3.0f).set_requires_grad(false);
  const Tensor teacher = rand_param({N, V}, 22, -3.0f, 3.0f).set_requires_grad(false);
  std::vector<int64_t> ids;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) ids.push_back((n + k) % V);  // skips token (n + K) % V
  const Tensor id_t = Tensor::from_ints(ids, {N, K});
  const Tensor lt = ops::gather(ops::log_softmax(ops::mul(teacher, 1.0f / 1.5f)), 1, id_t);
  for (Divergence kind : kAll) {
    const double dense = ops::distill_loss(student, teacher, kind, 1.5, ops::default_beta(kind)).item();
    const double topk = ops::distill_loss_topk(student, id_t, lt, kind, 1.5, ops::default_beta(kind)).item();
    EXPECT_NEAR(topk, dense, 2e-5 + 1e-4 * std::fabs(dense)) << ops::divergence_name(kind);
  }
}

TEST(Distill, TeacherCacheHoldsTheTeachersTopK) {
  ModelConfig c = testing::small_config(50, 16, 32, 1, 2, 2, 32);
  const Transformer teacher = Transformer::create(c, 5);
  std::vector<int32_t> tokens;
  for (int i = 0; i < 300; ++i) tokens.push_back((i * 17 + 3) % 50);
  const TokenDataset data = TokenDataset::from_tokens(tokens, {}, "toy", 300, 50);
  const std::string dir = ::testing::TempDir() + "teacher_cache";
  std::filesystem::remove_all(dir);
  const int64_t T = 8, K = 4;
  const TeacherCacheInfo info = write_teacher_cache(teacher, "toy-teacher", data, T, K, 2.0, 3, dir);
  EXPECT_EQ(info.windows, data.windows(T));
  const TeacherCache cache = TeacherCache::open(dir, data, T, 2.0);
  const std::vector<int64_t> starts = {5 * T, 0};
  Tensor ids, logp;
  cache.lookup(starts, ids, logp);
  NoGradGuard g;
  const Batch b = data.window_batch(5, 1, T);
  const std::vector<float> lp = ops::log_softmax(ops::mul(teacher.forward(b.ids), 0.5f)).to_vector();
  const std::vector<int64_t> got_ids = ids.to_int_vector();
  const std::vector<float> got_lp = logp.to_vector();
  for (int64_t t = 0; t < T; ++t) {
    std::vector<float> row(lp.begin() + t * 50, lp.begin() + (t + 1) * 50);
    std::vector<float> sorted = row;
    std::sort(sorted.rbegin(), sorted.rend());
    for (int64_t k = 0; k < K; ++k) {
      EXPECT_NEAR(got_lp[t * K + k], sorted[k], 1e-6) << "position " << t;
      EXPECT_EQ(row[got_ids[t * K + k]], got_lp[t * K + k]);
    }
  }
  expect_error_mentions([&] { TeacherCache::open(dir, data, 16, 2.0); }, {"teacher_cache.json", "seq_len 8"});
  expect_error_mentions([&] { TeacherCache::open(dir, data, T, 1.0); }, {"temperature"});
  expect_error_mentions([&] { cache.lookup({3}, ids, logp); }, {"no cached window starts at token 3"});
}

TEST(Distill, HiddenStateLossesMatchTheirFormulas) {
  // Rows: s = (1, 2), t = (2, 2); s = (0, 1), t = (3, -1); the third row is masked out.
  const Tensor s = Tensor::from_vector({1, 2, 0, 1, 5, 5}, {3, 2});
  const Tensor t = Tensor::from_vector({2, 2, 3, -1, 0, 1}, {3, 2});
  const Tensor mask = Tensor::from_vector({1, 1, 0}, {3});
  // mse: (1² + 0²) + (3² + 2²) = 14 over ‖t‖² = 8 + 10 = 18.
  EXPECT_NEAR(ops::hidden_state_loss(s, t, ops::HiddenLoss::MSE, mask).item(), 14.0 / 18.0, 1e-6);
  // cosine: 1 − 6/(√5·√8) and 1 − (−1)/(1·√10), averaged.
  const double want = ((1 - 6 / (std::sqrt(5.0) * std::sqrt(8.0))) + (1 + 1 / std::sqrt(10.0))) / 2;
  EXPECT_NEAR(ops::hidden_state_loss(s, t, ops::HiddenLoss::Cosine, mask).item(), want, 1e-6);
  EXPECT_NEAR(ops::hidden_state_loss(t, t, ops::HiddenLoss::MSE).item(), 0.0, 1e-7);
  const Tensor teacher = rand_param({5, 4}, 31).set_requires_grad(false);
  for (ops::HiddenLoss kind : {ops::HiddenLoss::MSE, ops::HiddenLoss::Cosine})
    EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return ops::hidden_state_loss(in[0], teacher, kind); }, {rand_param({5, 4}, 32)});
  expect_error_mentions([] { ops::parse_hidden_loss("l1"); }, {"unknown hidden-state loss", "mse, cosine"});
}

TEST(Distill, HiddenMatchMapsLayersByDepthAndProjectsWhenWidthsDiffer) {
  const ModelConfig teacher = testing::small_config(50, 16, 32, 4, 2, 2);
  EXPECT_EQ(HiddenMatch::create(teacher, testing::small_config(50, 16, 32, 2, 2, 2), 1).teacher_layer, (std::vector<int64_t>{1, 3}));
  const HiddenMatch narrow = HiddenMatch::create(teacher, testing::small_config(50, 8, 16, 3, 2, 2), 1);
  EXPECT_EQ(narrow.teacher_layer, (std::vector<int64_t>{0, 2, 3}));
  ASSERT_TRUE(narrow.projection.defined());
  EXPECT_EQ(narrow.projection.shape(), (Shape{16, 8}));
  EXPECT_TRUE(HiddenMatch::create(teacher, testing::small_config(50, 16, 32, 2, 2, 2), 1).parameters().empty());

  // Online distillation with a hidden-state loss sends gradient to the projection, and the
  // hidden term is what the projection's gradient comes from (alpha and the logits do not see it).
  const Transformer t = Transformer::create(testing::small_config(50, 16, 32, 4, 2, 2, 32), 3);
  const Transformer student = Transformer::create(testing::small_config(50, 8, 16, 3, 2, 2, 32), 4);
  DistillOptions o;
  o.hidden = ops::HiddenLoss::MSE;
  const LossFn loss = online_distill_loss(std::make_shared<const Transformer>(t), o, narrow);
  Batch b;
  b.ids = Tensor::from_ints({1, 5, 7, 9, 11, 2, 3, 4}, {2, 4});
  b.targets = Tensor::from_ints({5, 7, 9, 11, 2, 3, 4, 6}, {2, 4});
  loss(student, b, nullptr).backward();
  ASSERT_TRUE(narrow.projection.grad().defined());
  double g = 0;
  for (float v : narrow.projection.grad().to_vector()) g += std::fabs(v);
  EXPECT_GT(g, 0.0);
  EXPECT_TRUE(student.captured().block_output.empty()) << "captured activations must be dropped after the loss";
}

TEST(StudentInit, AllLayersOfADenseTeacherGiveTheTeachersLogits) {
  const ModelConfig c = testing::small_config(60, 16, 32, 3, 4, 2, 32);
  const Transformer teacher = Transformer::create(c, 8);
  EXPECT_EQ(evenly_spaced_layers(3, 3), (std::vector<int64_t>{0, 1, 2}));
  const Transformer copy = student_from_teacher(teacher, c, evenly_spaced_layers(3, 3), "t");
  NoGradGuard g;
  const Tensor ids = Tensor::from_ints({3, 1, 4, 1, 5, 9, 2, 6}, {1, 8});
  const std::vector<float> a = teacher.forward(ids).to_vector(), b = copy.forward(ids).to_vector();
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]);
}

TEST(StudentInit, MergedEqualExpertsReproduceTheDenseModelAndSubsetsCopyTheChosenLayers) {
  const ModelConfig c = testing::small_config(60, 16, 32, 4, 4, 2, 32);
  const Transformer dense = Transformer::create(c, 9);
  UpcycleOptions u;
  u.experts = 4;
  u.top_k = 2;
  const Transformer moe = upcycle(dense, u);  // four equal experts: the MoE computes the dense model
  NoGradGuard g;
  const Tensor ids = Tensor::from_ints({3, 1, 4, 1, 5, 9, 2, 6}, {1, 8});
  const std::vector<float> want = dense.forward(ids).to_vector();
  const std::vector<float> got = student_from_teacher(moe, c, {0, 1, 2, 3}, "moe").forward(ids).to_vector();
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-5f * (1 + std::fabs(want[i])));

  ModelConfig two = c;
  two.num_hidden_layers = 2;
  EXPECT_EQ(evenly_spaced_layers(4, 2), (std::vector<int64_t>{0, 3}));
  const Transformer sub = student_from_teacher(moe, two, {1, 3}, "moe");
  EXPECT_EQ(sub.layer(0).self_attn.q_proj.weight.to_vector(), moe.layer(1).self_attn.q_proj.weight.to_vector());
  const std::vector<float> merged_down = sub.layer(1).mlp.down_proj.weight.to_vector(), dense_down = dense.layer(3).mlp.down_proj.weight.to_vector();
  for (size_t i = 0; i < dense_down.size(); ++i) ASSERT_NEAR(merged_down[i], dense_down[i], 1e-7f);

  // A merged FFN is the mean of the experts' weights.
  Transformer varied = upcycle(dense, u);
  float* up = varied.layer(0).moe->up_proj.data<float>();
  up[0] += 4.0f;  // expert 0's first weight: the mean moves by 1
  const Transformer merged = student_from_teacher(varied, two, {0, 1}, "moe");
  EXPECT_NEAR(merged.layer(0).mlp.up_proj.weight.to_vector()[0], dense.layer(0).mlp.up_proj.weight.to_vector()[0] + 1.0f, 1e-6f);

  ModelConfig wide = two;
  wide.intermediate_size = 64;
  expect_error_mentions([&] { student_from_teacher(moe, wide, {0, 1}, "moe-dir"); }, {"intermediate_size 64", "32", "moe-dir"});
  ModelConfig narrow = two;
  narrow.hidden_size = 8;
  expect_error_mentions([&] { student_from_teacher(moe, narrow, {0, 1}, "moe-dir"); }, {"hidden_size 8", "16"});
  expect_error_mentions([&] { student_from_teacher(moe, two, {2, 1}, "moe-dir"); }, {"increasing"});
  expect_error_mentions([&] { student_from_teacher(moe, two, {0, 7}, "moe-dir"); }, {"teacher layer 7"});
  expect_error_mentions([&] { evenly_spaced_layers(2, 3); }, {"num_hidden_layers (3)", "2"});
}

}  // namespace
}  // namespace smelt
