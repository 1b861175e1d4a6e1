// Distillation: every divergence against values computed by hand in the test, gradchecks, the
// top-K form against the dense one, masked rows, and the teacher cache against the teacher.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "autograd/grad_mode.h"
#include "io/teacher_cache.h"
#include "ops/distill.h"
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

}  // namespace
}  // namespace smelt
