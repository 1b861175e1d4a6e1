// MoEfication's construction: every split of a dense FFN into experts, with every expert active,
// gives the dense model's logits; groups are balanced and cover every neuron once; the k-means
// groups what belongs together; bad requests are refused before any work.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "autograd/grad_mode.h"
#include "io/checkpoint.h"
#include "models/moefy.h"
#include "optim/moefy_fit.h"
#include "ops/ops.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

using testing::expect_error_mentions;

// The FFN inputs of every layer on `ids`, flattened to [tokens, hidden].
std::vector<Tensor> ffn_inputs(const Transformer& m, const Tensor& ids) {
  NoGradGuard g;
  m.set_capture(true);
  m.forward(ids);
  std::vector<Tensor> out;
  for (const Tensor& t : m.captured().ffn_input) out.push_back(ops::reshape(t, {-1, t.size(-1)}).clone());
  m.set_capture(false);
  return out;
}

Tensor calibration_ids() {
  std::vector<int64_t> ids;
  for (int i = 0; i < 48; ++i) ids.push_back((i * 7 + 3) % 50);
  return Tensor::from_ints(ids, {2, 24});
}

TEST(Moefy, EveryExpertActiveReproducesTheDenseModel) {
  const ModelConfig c = testing::small_config(50, 16, 48, 2, 4, 2, 32);
  const Transformer dense = Transformer::create(c, 21);
  const Tensor ids = calibration_ids();
  const std::vector<Tensor> calib = ffn_inputs(dense, ids);
  NoGradGuard g;
  const std::vector<float> want = dense.forward(ids).to_vector();
  for (const char* split : {"kmeans", "coact", "random"})
    for (int64_t shared : {0, 8})
      for (int64_t experts : {4, 5}) {
        if ((48 - shared) % experts != 0) continue;
        MoefyOptions o;
        o.experts = experts;
        o.top_k = experts;  // every expert active: unit gates sum the whole FFN
        o.split = split;
        o.shared_neurons = shared;
        std::vector<std::vector<std::vector<int64_t>>> groups;
        const Transformer moe = moefy(dense, o, calib, "dense", &groups);
        const std::vector<float> got = moe.forward(ids).to_vector();
        for (size_t i = 0; i < want.size(); ++i)
          ASSERT_NEAR(got[i], want[i], 1e-5f * (1 + std::fabs(want[i]))) << split << " shared " << shared << " experts " << experts;
        // Equal groups, every routed neuron exactly once.
        for (const auto& layer : groups) {
          std::set<int64_t> seen;
          for (const auto& group : layer) {
            EXPECT_EQ(static_cast<int64_t>(group.size()), (48 - shared) / experts);
            for (int64_t n : group) EXPECT_TRUE(seen.insert(n).second) << "neuron " << n << " in two experts";
          }
          EXPECT_EQ(static_cast<int64_t>(seen.size()), 48 - shared);
        }
        EXPECT_EQ(moe.config().expert_size(), (48 - shared) / experts);
      }
}

TEST(Moefy, FewerExpertsThanAllGiveTheSumOfThoseExperts) {
  // With top-2 of 4 and the router at zero every token picks the same two experts (a tie, broken
  // the same way for all) with weight 1 each: the layer computes the dense FFN restricted to
  // those experts' neurons. Checked on one MoE block against a plain loop.
  const ModelConfig c = testing::small_config(50, 16, 48, 1, 4, 2, 32);
  const Transformer dense = Transformer::create(c, 22);
  MoefyOptions o;
  o.experts = 4;
  o.top_k = 2;
  o.split = "random";
  std::vector<std::vector<std::vector<int64_t>>> groups;
  const Transformer moe = moefy(dense, o, {}, "dense", &groups);
  NoGradGuard g;
  const Tensor x = testing::rand_param({1, 3, 16}, 5).detach();
  const std::vector<float> got = moe.layer(0).moe->forward(x, Tensor(), moe.routing_policies()[0]).to_vector();
  std::vector<int64_t> chosen;
  for (int64_t e = 0; e < 4; ++e)
    if (moe.layer(0).moe->stats().load[e] > 0) chosen.push_back(e);
  ASSERT_EQ(chosen.size(), 2u);
  // By hand: Σ over the neurons of experts 0 and 1 of down[:, i] · silu(gate_i · x) · (up_i · x).
  const std::vector<float> xs = x.to_vector(), gw = dense.layer(0).mlp.gate_proj.weight.to_vector(),
                           uw = dense.layer(0).mlp.up_proj.weight.to_vector(), dw = dense.layer(0).mlp.down_proj.weight.to_vector();
  for (int64_t t = 0; t < 3; ++t)
    for (int64_t out = 0; out < 16; ++out) {
      double sum = 0;
      for (int64_t e : chosen)
        for (int64_t i : groups[0][e]) {
          double a = 0, b = 0;
          for (int64_t k = 0; k < 16; ++k) {
            a += gw[i * 16 + k] * xs[t * 16 + k];
            b += uw[i * 16 + k] * xs[t * 16 + k];
          }
          sum += dw[out * 48 + i] * (a / (1 + std::exp(-a))) * b;
        }
      ASSERT_NEAR(got[t * 16 + out], sum, 1e-5) << "token " << t << " output " << out;
    }
}

TEST(Moefy, LayerwiseFitRecoversTheDenseFfnUnderTopK) {
  // One layer split 4 ways and run top-2: fitting the router to the experts' output norms and
  // training the block on its dense FFN's outputs must cut the held-out error well below the
  // untrained split's. (Random weights leave little structure: half the neurons' output cannot
  // be recovered, so the floor is high; trained models fit far better, see the README.)
  const ModelConfig c = testing::small_config(50, 16, 48, 1, 4, 2, 32);
  const Transformer dense = Transformer::create(c, 24);
  MoefyOptions o;
  o.experts = 4;
  o.top_k = 2;
  Transformer moe = moefy(dense, o, {}, "dense", nullptr);
  const Tensor x = testing::rand_param({600, 16}, 9).detach();
  Tensor target;
  {
    NoGradGuard g;
    target = dense.layer(0).mlp.forward(x);
  }
  LayerFitOptions fo;
  fo.steps = 150;
  fo.batch_tokens = 128;
  fo.lr = 3e-3;
  MoEBlock& block = *moe.layer(0).moe;
  fit_router_to_expert_norms(block, x);
  const LayerFit f = fit_moe_layer(block, x, target, moe.routing_policies()[0], fo);
  EXPECT_GT(f.error_before, 0.05) << "top-2 of 4 experts drops real work";
  EXPECT_LT(f.error_after, 0.7 * f.error_before) << "before " << f.error_before << " after " << f.error_after;

  // Stage 2: a loose budget takes the fewest experts; an impossible one keeps the most accurate
  // policy, marked outside the budget.
  const PolicyChoice loose = choose_layer_policy(block, x, target, 10.0, 0);
  EXPECT_NEAR(loose.mean_active, 1.0, 1e-9) << loose.policy.str();
  const PolicyChoice fitted = choose_layer_policy(block, x, target, f.error_after * 1.5, 0);
  EXPECT_LE(fitted.error, f.error_after * 1.5);
  EXPECT_LE(fitted.mean_active, 4.0);
  EXPECT_TRUE(loose.within_budget);
  const PolicyChoice impossible = choose_layer_policy(block, x, target, 1e-9, 3);
  EXPECT_FALSE(impossible.within_budget);
  for (int64_t k = 1; k <= block.num_experts(); ++k)  // nothing is more accurate than what it kept
    EXPECT_LE(impossible.error, relative_error(block, x, target, RoutingPolicy::top_k(k)) + 1e-12) << k;
}

// With unit weights the router only selects: after its fit to the expert norms (no longer
// uniform) every expert chosen still reproduces the dense FFN, where score weights do not.
TEST(Moefy, UnitWeightsStayExactWithEveryExpertWhateverTheRouter) {
  const ModelConfig c = testing::small_config(50, 16, 48, 1, 4, 2, 32);
  const Transformer dense = Transformer::create(c, 24);
  const Tensor x = testing::rand_param({200, 16}, 9).detach();
  Tensor target;
  {
    NoGradGuard g;
    target = dense.layer(0).mlp.forward(x);
  }
  for (bool unit : {true, false}) {
    MoefyOptions o;
    o.experts = 4;
    o.top_k = 2;
    o.unit_weights = unit;
    Transformer moe = moefy(dense, o, {}, "dense", nullptr);
    EXPECT_EQ(moe.config().routed_weights, unit ? "unit" : "scores");
    MoEBlock& block = *moe.layer(0).moe;
    EXPECT_LT(relative_error(block, x, target, RoutingPolicy::top_k(4)), 1e-10);  // uniform router: both exact
    fit_router_to_expert_norms(block, x);
    const double all = relative_error(block, x, target, RoutingPolicy::top_k(4));
    if (unit) EXPECT_LT(all, 1e-10);
    else EXPECT_GT(all, 1e-4);  // the fitted router's weights scale the experts away from the dense FFN
    EXPECT_GT(relative_error(block, x, target, RoutingPolicy::top_k(2)), 1e-3);  // top-2 still drops work
  }
}

TEST(Moefy, PerLayerRoutingPoliciesTravelInConfigJson) {
  EXPECT_EQ(RoutingPolicy::parse("top-p:0.8:3").spec(), "top-p:0.8:3");
  EXPECT_EQ(RoutingPolicy::parse("top-k:2").spec(), "top-k:2");
  expect_error_mentions([] { RoutingPolicy::parse("top-q:2"); }, {"top-q:2", "top-k:K"});
  ModelConfig c = testing::small_config(50, 16, 48, 2, 4, 2, 32);
  c.num_local_experts = 4;
  c.routing_policies = {"top-k:1", "top-p:0.7:3"};
  const Transformer m = Transformer::create(c, 3);
  const std::string dir = ::testing::TempDir() + "smelt_policies";
  save_model_dir(dir, m);
  const Transformer back = load_model_dir(dir);
  ASSERT_EQ(back.routing_policies().size(), 2u);
  EXPECT_EQ(back.routing_policies()[0].spec(), "top-k:1");
  EXPECT_EQ(back.routing_policies()[1].spec(), "top-p:0.7:3");
  c.routing_policies = {"top-k:1"};
  expect_error_mentions([&] { c.validate(); }, {"routing_policies", "one entry per layer (2)"});
}

TEST(Moefy, BalancedKmeansFindsSeparatedClusters) {
  // Three tight clusters of four points in 2-D, shuffled: each group must be one cluster.
  const float centre[3][2] = {{0, 0}, {10, 0}, {0, 10}};
  std::vector<float> x;
  std::vector<int64_t> label;
  for (int i = 0; i < 12; ++i) {
    const int c = (i * 5) % 3;
    x.push_back(centre[c][0] + 0.1f * static_cast<float>(i % 4));
    x.push_back(centre[c][1] - 0.1f * static_cast<float>(i % 3));
    label.push_back(c);
  }
  const auto groups = balanced_kmeans(x, 12, 2, 3, 20, 7);
  for (const auto& g : groups) {
    ASSERT_EQ(g.size(), 4u);
    for (int64_t r : g) EXPECT_EQ(label[r], label[g[0]]) << "row " << r;
  }
}

TEST(Moefy, BadRequestsAreRefused) {
  const ModelConfig c = testing::small_config(50, 16, 48, 2, 4, 2, 32);
  const Transformer dense = Transformer::create(c, 23);
  auto run = [&](int64_t experts, int64_t top_k, const std::string& split, int64_t shared) {
    MoefyOptions o;
    o.experts = experts;
    o.top_k = top_k;
    o.split = split;
    o.shared_neurons = shared;
    moefy(dense, o, {}, "dense-dir", nullptr);
  };
  expect_error_mentions([&] { run(64, 2, "kmeans", 0); }, {"--experts 64", "48"});
  expect_error_mentions([&] { run(5, 2, "kmeans", 0); }, {"dense-dir", "5 equal experts"});
  expect_error_mentions([&] { run(4, 6, "kmeans", 0); }, {"--top-k 6"});
  expect_error_mentions([&] { run(4, 2, "spectral", 0); }, {"--split", "spectral"});
  expect_error_mentions([&] { run(4, 2, "coact", 0); }, {"--split coact needs calibration data"});
  expect_error_mentions([&] { run(4, 2, "kmeans", 8); }, {"--shared-neurons needs calibration data"});
  MoefyOptions o;
  o.experts = 4;
  const Transformer moe = moefy(dense, o, {}, "dense", nullptr);
  expect_error_mentions([&] { moefy(moe, o, {}, "moe-dir", nullptr); }, {"moe-dir", "already an MoE"});
}

}  // namespace
}  // namespace smelt
