// Composing experts into an MoE: exact when the experts are identical, routers that send each
// domain's tokens to its own expert, and inputs that do not fit refused by name.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "autograd/grad_mode.h"
#include "io/config_json.h"
#include "models/compose.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

using testing::expect_error_mentions;

ModelConfig tiny() { return testing::small_config(64, 32, 48, 2, 4, 2, 32); }

Tensor domain_ids(int64_t lo, int64_t hi, int64_t seed, int64_t rows = 4) {
  Philox rng(static_cast<uint64_t>(seed));
  std::vector<int64_t> v(rows * 16);
  for (auto& x : v) x = lo + static_cast<int64_t>(rng.next_u32() % static_cast<uint32_t>(hi - lo));
  return Tensor::from_ints(v, {rows, 16});
}

TEST(Compose, IdenticalExpertsReproduceTheBaseModel) {
  const Transformer base = Transformer::create(tiny(), 3);
  const std::vector<const Transformer*> experts = {&base, &base, &base};
  const std::vector<Tensor> prompts = {domain_ids(0, 20, 1), domain_ids(20, 40, 2), domain_ids(40, 64, 3)};
  const Tensor ids = domain_ids(0, 64, 9);
  NoGradGuard g;
  const std::vector<float> want = base.forward(ids).to_vector();
  for (const char* init : {"hidden", "embed", "random"})
    for (bool shared : {false, true}) {
      ComposeOptions o;
      o.top_k = 2;
      o.gate_init = init;
      o.shared_expert = shared;
      const Transformer moe = compose(base, experts, prompts, {}, o);
      EXPECT_EQ(moe.config().num_local_experts, 3);
      const std::vector<float> got = moe.forward(ids).to_vector();
      double worst = 0;
      for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - want[i]));
      EXPECT_LT(worst, 1e-5) << init << (shared ? " with shared expert" : "");
    }
}

TEST(Compose, HiddenStateRoutersSendEachDomainToItsExpert) {
  // Three "domains" that use disjoint token ranges; the experts are the base (so only the router
  // distinguishes them) and each router row points from the experts' mean to its domain's mean
  // (hidden), or the same whitened by the within-domain covariance (lda).
  const Transformer base = Transformer::create(tiny(), 4);
  const std::vector<Tensor> prompts = {domain_ids(0, 20, 1, 16), domain_ids(20, 40, 2, 16), domain_ids(40, 64, 3, 16)};
  for (const char* init : {"hidden", "lda"}) {
  SCOPED_TRACE(init);
  ComposeOptions o;
  o.top_k = 1;
  o.gate_init = init;
  const Transformer moe = compose(base, {&base, &base, &base}, prompts, {}, o);
  NoGradGuard g;
  for (int64_t d = 0; d < 3; ++d) {
    moe.forward(domain_ids(d * 20, d == 2 ? 64 : d * 20 + 20, 100 + d, 16));  // fresh text from the same domain
    for (const auto& [layer, stats] : moe.moe_stats()) {
      // Tokens are routed one by one and vary around their domain's mean, so not all of them
      // follow it; the domain's own expert must get the largest share, well above 1/3.
      EXPECT_EQ(std::max_element(stats.load.begin(), stats.load.end()) - stats.load.begin(), d) << "domain " << d << " layer " << layer;
      EXPECT_GT(stats.load[d], 0.45) << "domain " << d << " layer " << layer << ": its expert gets only " << stats.load[d];
    }
  }
  }
}

// Two domains of a random model: the whitened rows (lda) route each domain's fresh text to its
// own expert at least as well as the raw mean difference (hidden) does, and clearly above chance.
// Mean share of each domain's held-out tokens (over every layer) that a top-1 composition of
// `base` with itself routes to that domain's own expert, with the routers from `init`.
double own_share(const Transformer& base, const std::vector<Tensor>& prompts, const char* init, ComposeReport* report = nullptr) {
  ComposeOptions o;
  o.top_k = 1;
  o.gate_init = init;
  const Transformer moe = compose(base, {&base, &base}, prompts, {}, o, report);
  double share = 0;
  int64_t n = 0;
  for (int64_t d = 0; d < 2; ++d) {
    moe.forward(domain_ids(d * 32, d * 32 + 32, 200 + d, 16));
    for (const auto& [layer, stats] : moe.moe_stats()) share += stats.load[d], ++n;
  }
  return share / static_cast<double>(n);
}

TEST(Compose, LdaRoutersSendEachDomainToItsExpertAtLeastAsWellAsHidden) {
  const Transformer base = Transformer::create(tiny(), 5);
  const std::vector<Tensor> prompts = {domain_ids(0, 32, 1, 16), domain_ids(32, 64, 2, 16)};
  NoGradGuard g;
  const double hidden = own_share(base, prompts, "hidden"), lda = own_share(base, prompts, "lda");
  EXPECT_GT(lda, 0.6) << "lda routes only " << lda << " of each domain's tokens to its own expert";
  EXPECT_GE(lda, hidden - 0.02) << "lda " << lda << " against hidden " << hidden;
}

// auto picks hidden or lda per layer by how the composed model routes the prompts' second half,
// says which, and routes held-out tokens about as well as the better of the two.
TEST(Compose, AutoChoosesPerLayerFromHeldOutPromptWindows) {
  const Transformer base = Transformer::create(tiny(), 5);
  const std::vector<Tensor> prompts = {domain_ids(0, 32, 1, 16), domain_ids(32, 64, 2, 16)};
  NoGradGuard g;
  ComposeReport report;
  const double chosen = own_share(base, prompts, "auto", &report);
  ASSERT_EQ(report.layer_gate_init.size(), static_cast<size_t>(tiny().num_hidden_layers));
  for (size_t l = 0; l < report.layer_gate_init.size(); ++l) {
    const std::string& kind = report.layer_gate_init[l];
    EXPECT_TRUE(kind == "hidden" || kind == "lda") << kind;
    const auto [hidden, lda] = report.held_out_own_largest[l];
    if (lda != hidden) EXPECT_EQ(kind, lda > hidden ? "lda" : "hidden") << "layer " << l;  // ties go by the margins
    EXPECT_LE(std::max(hidden, lda), 2);
  }
  const double best = std::max(own_share(base, prompts, "hidden"), own_share(base, prompts, "lda"));
  EXPECT_GT(chosen, 0.6);
  EXPECT_GE(chosen, best - 0.05) << "auto " << chosen << " against the better single kind " << best;
  const std::vector<Tensor> one_window = {domain_ids(0, 32, 1, 1), domain_ids(32, 64, 2, 1)};
  expect_error_mentions([&] { own_share(base, one_window, "auto"); }, {"--gate-init auto", "two prompt windows"});
}

TEST(Compose, RefusesInputsThatDoNotFitNamingThem) {
  ModelConfig wide = tiny();
  wide.intermediate_size = 64;
  expect_error_mentions([&] { check_composable({tiny(), tiny(), wide}, {"base", "e0", "e1"}); }, {"e1", "intermediate_size", "64", "48"});
  ModelConfig moe = tiny();
  moe.num_local_experts = 4;
  expect_error_mentions([&] { check_composable({tiny(), moe}, {"base", "e0"}); }, {"e0", "MoE model"});
  const Transformer base = Transformer::create(tiny(), 3);
  ComposeOptions o;
  o.top_k = 3;
  expect_error_mentions([&] { compose(base, {&base, &base}, {}, {}, o); }, {"--top-k (3)"});
  o.top_k = 1;
  expect_error_mentions([&] { compose(base, {&base, &base}, {}, {}, o); }, {"needs prompts"});
}

}  // namespace
}  // namespace smelt
