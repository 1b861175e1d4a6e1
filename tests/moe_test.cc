// The MoE layer against a naive per-token reference built from plain ops, the balancing losses
// against hand-computed values, and upcycling's exactness.
#include <fstream>
#include <functional>

#include "io/checkpoint.h"
#include "io/config_json.h"
#include "models/upcycle.h"
#include "ops/moe.h"
#include "ops/ops.h"
#include "optim/trainer.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

using testing::rand_param;

ModelConfig moe_config(int64_t E, int64_t k, const std::string& scoring, int64_t shared) {
  ModelConfig c;
  c.vocab_size = 32;
  c.hidden_size = 8;
  c.intermediate_size = 6;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.max_position_embeddings = 32;
  c.num_local_experts = E;
  c.num_experts_per_tok = k;
  c.scoring_func = scoring;
  c.shared_expert_intermediate_size = shared;
  c.shared_expert_gate = shared > 0;
  c.router_aux_loss_coef = 0.0;
  return c;
}

MoEBlock make_block(const ModelConfig& c, uint64_t seed) {
  MoEBlock b(c, 0);
  const int64_t E = c.num_local_experts, F = c.expert_size(), C = c.hidden_size, Fs = c.shared_expert_intermediate_size;
  b.router = rand_param({E, C}, seed + 1);
  b.gate_proj = rand_param({E, F, C}, seed + 2);
  b.up_proj = rand_param({E, F, C}, seed + 3);
  b.down_proj = rand_param({E, C, F}, seed + 4);
  if (Fs > 0) {
    b.shared_gate_proj = rand_param({Fs, C}, seed + 5);
    b.shared_up_proj = rand_param({Fs, C}, seed + 6);
    b.shared_down_proj = rand_param({C, Fs}, seed + 7);
    b.shared_expert_gate = rand_param({1, C}, seed + 8);
  }
  b.score_bias = Tensor::zeros({E});
  return b;
}

Tensor expert_matrix(const Tensor& stacked, int64_t e) {
  return ops::reshape(ops::slice(stacked, 0, e, e + 1), {stacked.size(1), stacked.size(2)});
}

// The plain reference: every token on its own, experts chosen from its score row with a loop.
Tensor reference_moe(const MoEBlock& b, const Tensor& x, int64_t k, bool softmax_scores) {
  const int64_t N = x.size(0), E = b.router.size(0);
  std::vector<Tensor> rows;
  for (int64_t n = 0; n < N; ++n) {
    Tensor xn = ops::slice(x, 0, n, n + 1);  // [1, C]
    Tensor logits = ops::linear(xn, b.router);
    Tensor scores = softmax_scores ? ops::softmax(logits) : ops::sigmoid(logits);
    std::vector<float> sv = scores.to_vector();
    std::vector<int64_t> order(E);
    for (int64_t e = 0; e < E; ++e) order[e] = e;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t c) { return sv[a] > sv[c]; });
    Tensor total, weight_sum;
    for (int64_t j = 0; j < k; ++j) {
      Tensor w = ops::slice(scores, 1, order[j], order[j] + 1);
      weight_sum = weight_sum.defined() ? ops::add(weight_sum, w) : w;
    }
    for (int64_t j = 0; j < k; ++j) {
      const int64_t e = order[j];
      Tensor w = ops::div(ops::slice(scores, 1, e, e + 1), weight_sum);
      Tensor h = ops::swiglu(ops::linear(xn, expert_matrix(b.gate_proj, e)), ops::linear(xn, expert_matrix(b.up_proj, e)));
      Tensor y = ops::mul(ops::linear(h, expert_matrix(b.down_proj, e)), w);
      total = total.defined() ? ops::add(total, y) : y;
    }
    if (b.shared_gate_proj.defined()) {
      Tensor s = ops::linear(ops::swiglu(ops::linear(xn, b.shared_gate_proj), ops::linear(xn, b.shared_up_proj)), b.shared_down_proj);
      total = ops::add(total, ops::mul(s, ops::sigmoid(ops::linear(xn, b.shared_expert_gate))));
    }
    rows.push_back(total);
  }
  return ops::cat(rows, 0);
}

std::vector<Tensor> block_params(const MoEBlock& b) {
  std::vector<Tensor> p = {b.router, b.gate_proj, b.up_proj, b.down_proj};
  if (b.shared_gate_proj.defined()) {
    for (const Tensor& t : {b.shared_gate_proj, b.shared_up_proj, b.shared_down_proj, b.shared_expert_gate}) p.push_back(t);
  }
  return p;
}

void expect_near_vec(const Tensor& a, const Tensor& b, double tol, const std::string& what) {
  ASSERT_TRUE(a.defined() && b.defined()) << what;
  auto x = a.to_vector(), y = b.to_vector();
  ASSERT_EQ(x.size(), y.size()) << what;
  for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(x[i], y[i], tol * (1 + std::fabs(y[i]))) << what << " [" << i << "]";
}

TEST(MoE, ForwardAndEveryGradientMatchNaivePerTokenLoop) {
  for (const std::string scoring : {"softmax", "sigmoid"})
    for (int64_t k : {1, 2, 4})
      for (int64_t shared : {0, 5}) {
        SCOPED_TRACE(scoring + " k=" + std::to_string(k) + " shared=" + std::to_string(shared));
        ModelConfig c = moe_config(4, k, scoring, shared);
        MoEBlock b = make_block(c, 100 + k);
        // 3 tokens with k = 1 leave at least one of the 4 experts without tokens.
        Tensor x = rand_param({1, 3, 8}, 7);
        Tensor r = Tensor::uniform({3, 8}, *std::make_unique<Philox>(9), -1, 1);
        Tensor out = b.forward(x, Tensor(), RoutingPolicy::top_k(k));
        ops::sum(ops::mul(ops::reshape(out, {3, 8}), r)).backward();
        std::vector<Tensor> params = block_params(b);
        std::vector<Tensor> fused_grads;
        for (const Tensor& p : params) fused_grads.push_back(p.grad());
        Tensor fused_dx = x.grad();
        for (const Tensor& p : params) p.set_grad(Tensor());
        x.set_grad(Tensor());
        Tensor ref = reference_moe(b, ops::reshape(x, {3, 8}), k, scoring == "softmax");
        ops::sum(ops::mul(ref, r)).backward();
        expect_near_vec(ops::reshape(out, {3, 8}), ref, 1e-5, "output");
        expect_near_vec(fused_dx, x.grad(), 1e-4, "d x");
        for (size_t i = 0; i < params.size(); ++i) {
          Tensor want = params[i].grad().defined() ? params[i].grad() : Tensor::zeros(params[i].shape());
          Tensor got = fused_grads[i].defined() ? fused_grads[i] : Tensor::zeros(params[i].shape());
          expect_near_vec(got, want, 1e-4, "d param " + std::to_string(i));
        }
        if (k == 1) {
          // An expert with no tokens gets exactly zero gradient.
          auto load = b.stats().load;
          int64_t empty = std::find(load.begin(), load.end(), 0.0) - load.begin();
          ASSERT_LT(empty, 4);
          Tensor g = expert_matrix(fused_grads[1], empty);
          for (float v : g.to_vector()) EXPECT_EQ(v, 0.0f);
        }
      }
}

TEST(MoE, DispatchGradcheck) {
  Tensor x = rand_param({4, 5}, 1), gate = rand_param({3, 6, 5}, 2), up = rand_param({3, 6, 5}, 3), down = rand_param({3, 5, 6}, 4);
  Tensor w = rand_param({6}, 5, 0.1f, 1.0f);
  // Token 0 twice, token 3 in no slot (dropped), expert 1 empty.
  Tensor token = Tensor::from_ints({0, 1, 2, 0, 1, 2}, {6});
  Tensor expert = Tensor::from_ints({0, 2, 2, 2, 0, 0}, {6});
  EXPECT_GRADCHECK([=](const std::vector<Tensor>& v) { return ops::moe_ffn(v[0], v[1], v[2], v[3], token, expert, v[4]); },
                   std::vector<Tensor>{x, gate, up, down, w});
}

TEST(MoE, AuxAndZLossMatchHandComputation) {
  ModelConfig c = moe_config(2, 1, "softmax", 0);
  c.hidden_size = 2;
  c.intermediate_size = 2;
  MoEBlock b(c, 0);
  b.router = Tensor::from_vector({std::log(3.0f), 0.0f, 0.0f, 0.0f}, {2, 2});
  b.gate_proj = Tensor::zeros({2, 2, 2});
  b.up_proj = Tensor::zeros({2, 2, 2});
  b.down_proj = Tensor::zeros({2, 2, 2});
  b.score_bias = Tensor::zeros({2});
  Tensor x = Tensor::from_vector({1, 0, 0, 1}, {1, 2, 2});
  // token 0: p = (3/4, 1/4) → expert 0; token 1: p = (1/2, 1/2) → expert 0 (tie: lower index)
  // f = (1, 0), P = (5/8, 3/8): aux = 2 · (1 · 5/8) = 1.25; z = ((ln 4)² + (ln 2)²) / 2
  b.forward(x, Tensor(), RoutingPolicy::top_k(1));
  EXPECT_NEAR(b.stats().aux_loss, 1.25, 1e-6);
  EXPECT_NEAR(b.stats().z_loss, (std::pow(std::log(4.0), 2) + std::pow(std::log(2.0), 2)) / 2, 1e-5);
  // Masking token 1 out: f = (1, 0), P = (3/4, 1/4) → aux = 1.5; z = (ln 4)²
  b.forward(x, Tensor::from_vector({1, 0}, {2}), RoutingPolicy::top_k(1));
  EXPECT_NEAR(b.stats().aux_loss, 1.5, 1e-6);
  EXPECT_NEAR(b.stats().z_loss, std::pow(std::log(4.0), 2), 1e-5);
}

TEST(MoE, AuxFreeBiasBalancingReducesLoadSpread) {
  ModelConfig c = moe_config(4, 1, "sigmoid", 0);
  c.moe_balancing = "aux_free";
  c.aux_free_update_rate = 0.01;
  MoEBlock b = make_block(c, 50);
  // Skew: small random router rows, plus a strong preference for expert 0 on inputs along (1, ..., 1).
  Philox init(11);
  b.router = Tensor::randn({4, 8}, init, 0.0f, 0.3f);
  for (int i = 0; i < 8; ++i) b.router.data<float>()[i] += 0.5f;
  Philox rng(3);
  double first = 0, last = 0;
  for (int step = 0; step < 300; ++step) {
    Tensor x = ops::add(Tensor::randn({1, 64, 8}, rng, 0.0f, 0.5f), 1.0f);
    b.forward(x, Tensor(), RoutingPolicy::top_k(1));  // grad mode on: training, the bias moves
    if (step == 0) first = b.stats().load_cv;
    last = b.stats().load_cv;
  }
  EXPECT_GT(first, 1.0);  // nearly everything on one expert at the start
  EXPECT_LT(last, first / 3) << "coefficient of variation " << first << " → " << last;
}

TEST(MoE, TopPAndCapacityRouting) {
  ModelConfig c = moe_config(4, 2, "softmax", 0);
  MoEBlock b = make_block(c, 60);
  Tensor x = Tensor::randn({2, 5, 8}, *std::make_unique<Philox>(4));
  NoGradGuard g;
  b.forward(x, Tensor(), RoutingPolicy::top_p(1e-6));
  EXPECT_DOUBLE_EQ(b.stats().mean_active_experts, 1.0);  // the top expert alone reaches any tiny p
  b.forward(x, Tensor(), RoutingPolicy::top_p(1.0));
  EXPECT_DOUBLE_EQ(b.stats().mean_active_experts, 4.0);
  b.forward(x, Tensor(), RoutingPolicy::top_p(1.0, 3));
  EXPECT_DOUBLE_EQ(b.stats().mean_active_experts, 3.0);
  ModelConfig cc = c;
  cc.capacity_factor = 0.5;
  MoEBlock capped = make_block(cc, 60);
  capped.forward(x, Tensor(), RoutingPolicy::top_k(2));
  EXPECT_GT(capped.stats().dropped_fraction, 0.0);
  // capacity ⌈0.5 · 10 tokens · 2 / 4⌉ = 3 slots per expert: at most 12 of the 20 slots survive
  EXPECT_LE(capped.stats().mean_active_experts, 1.2 + 1e-9);
}

TEST(MoE, ExpertChoiceGivesEveryExpertItsCapacity) {
  ModelConfig c = moe_config(4, 2, "softmax", 0);
  c.routing = "expert_choice";
  MoEBlock b = make_block(c, 70);
  Tensor x = rand_param({2, 6, 8}, 12);
  Tensor out = b.forward(x, Tensor(), RoutingPolicy::top_k(2));
  // capacity = 12 tokens · 2 / 4 experts = 6 tokens per expert: perfectly even load
  for (double l : b.stats().load) EXPECT_DOUBLE_EQ(l, 0.25);
  EXPECT_DOUBLE_EQ(b.stats().load_cv, 0.0);
  ops::sum(out).backward();
  EXPECT_TRUE(b.router.grad().defined());
  EXPECT_TRUE(x.grad().defined());
}

Tensor fortune_ids() {
  const std::string text = "A fool and his money are soon parted. -- Thomas Tusser\nTo err is human; to forgive, divine.";
  std::vector<int64_t> ids(text.begin(), text.end());
  ids.resize(64);
  return Tensor::from_ints(ids, {2, 32});
}

TEST(Upcycle, ReproducesTheDenseModelExactly) {
  ModelConfig dc;
  dc.vocab_size = 256; dc.hidden_size = 32; dc.intermediate_size = 48; dc.num_hidden_layers = 3;
  dc.num_attention_heads = 4; dc.num_key_value_heads = 2; dc.max_position_embeddings = 64;
  Transformer dense = Transformer::create(dc, 21);
  NoGradGuard g;
  Tensor ids = fortune_ids();
  std::vector<float> want = dense.forward(ids).to_vector();
  struct Case { int64_t experts, k, every, shared; const char* scoring; };
  for (Case cs : {Case{8, 2, 1, 0, "softmax"}, Case{4, 1, 2, 0, "softmax"}, Case{4, 4, 1, 1, "sigmoid"}, Case{6, 2, 1, 2, "softmax"}}) {
    UpcycleOptions o;
    o.experts = cs.experts; o.top_k = cs.k; o.every = cs.every; o.shared_experts = cs.shared; o.scoring_func = cs.scoring;
    Transformer moe = upcycle(dense, o);
    std::vector<float> got = moe.forward(ids).to_vector();
    double err = 0;
    for (size_t i = 0; i < got.size(); ++i) err = std::max(err, std::fabs(static_cast<double>(got[i]) - want[i]));
    EXPECT_LT(err, 1e-5) << cs.experts << " experts, top-" << cs.k << ", every " << cs.every << ", " << cs.shared << " shared";
  }
  UpcycleOptions noisy;
  noisy.noise = 0.1;
  Transformer moe = upcycle(dense, noisy);
  std::vector<float> got = moe.forward(ids).to_vector();
  double err = 0;
  for (size_t i = 0; i < got.size(); ++i) err = std::max(err, std::fabs(static_cast<double>(got[i]) - want[i]));
  EXPECT_GT(err, 1e-4) << "noise must break the symmetry";
}

TEST(MoE, SaveLoadKeepsLogitsForMixtralAndQwenLayouts) {
  for (int64_t shared : {0, 4}) {
    ModelConfig c = moe_config(4, 2, "softmax", shared);
    c.num_hidden_layers = 2;
    c.decoder_sparse_step = 2;  // layer 0 dense, layer 1 MoE
    c.moe_balancing = "aux_free";
    Transformer m = Transformer::create(c, 31);
    m.layer(1).moe->score_bias.data<float>()[2] = 0.25f;
    const std::string dir = ::testing::TempDir() + "smelt_moe_" + std::to_string(shared);
    save_model_dir(dir, m);
    Transformer back = load_model_dir(dir);
    NoGradGuard g;
    Tensor ids = Tensor::from_ints({1, 5, 9, 3, 7, 2}, {1, 6});
    EXPECT_EQ(m.forward(ids).to_vector(), back.forward(ids).to_vector());
    bool found = false;
    for (const auto& [name, t] : m.state_dict())
      found |= name == (shared ? "model.layers.1.mlp.experts.3.down_proj.weight" : "model.layers.1.block_sparse_moe.experts.3.w2.weight");
    EXPECT_TRUE(found) << "Hugging Face expert names";
  }
}

TEST(MoE, TinyMoeTransformerOverfitsOneBatch) {
  ModelConfig c = moe_config(4, 2, "softmax", 0);
  c.hidden_size = 32; c.intermediate_size = 32; c.num_hidden_layers = 2; c.num_attention_heads = 4; c.num_key_value_heads = 2;
  c.router_aux_loss_coef = 0.01;
  Transformer m = Transformer::create(c, 8);
  Philox rng(2);
  std::vector<int64_t> ids(4 * 16), tgt(4 * 16);
  for (size_t i = 0; i < ids.size(); ++i) { ids[i] = rng.next_u32() % 32; tgt[i] = rng.next_u32() % 32; }
  Batch b{Tensor::from_ints(ids, {4, 16}), Tensor::from_ints(tgt, {4, 16}), Tensor()};
  TrainConfig tc;
  tc.steps = 200; tc.lr = 1e-2; tc.min_lr = 1e-3; tc.warmup_steps = 10; tc.weight_decay = 0;
  Trainer t(m, tc);
  StepMetrics last;
  for (int64_t s = 0; s < tc.steps; ++s) last = t.step(s, {b});
  EXPECT_LT(last.loss, 0.05);
  ASSERT_EQ(last.moe.size(), 2u);
  EXPECT_GT(last.aux_loss, 0.0);
}

using testing::write_temp;

TEST(MoE, BadConfigsAreRefusedBeforeAnyWork) {
  const std::string base = R"("vocab_size": 256, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4)";
  struct Case { const char* extra; const char* needle; };
  for (Case cs : {Case{R"("num_local_experts": 4, "num_experts_per_tok": 5)", "num_experts_per_tok"},
                  Case{R"("num_local_experts": 0)", "num_local_experts"},
                  Case{R"("num_local_experts": 4, "capacity_factor": 0)", "capacity_factor"},
                  Case{R"("num_local_experts": 4, "capacity_factor": -1.5)", "capacity_factor"},
                  Case{R"("num_local_experts": 4, "scoring_func": "relu")", "scoring_func"}}) {
    std::string p = write_temp("moe_bad.json", std::string("{\"model\": {") + base + ", " + cs.extra + "}}");
    try {
      read_recipe(p);
      ADD_FAILURE() << "accepted: " << cs.extra;
    } catch (const Error& e) {
      EXPECT_NE(e.message().find(cs.needle), std::string::npos) << e.message();
      EXPECT_NE(e.message().find("moe_bad.json"), std::string::npos) << e.message();
    }
  }
  UpcycleOptions o;
  o.experts = 2;
  o.top_k = 3;
  EXPECT_THROW(o.validate(), Error);
}

}  // namespace
}  // namespace smelt

namespace smelt {
namespace {

// A NaN score ranks as −∞ (last, ties to the lower index): every row still gets k distinct,
// valid experts, on every device (the ranking's order must be total for std::sort and the GPU).
TEST(MoE, TopKRanksNaNLast) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Tensor x = Tensor::from_vector({nan, 0.5f, nan, -1.0f, /**/ nan, nan, nan, nan}, {2, 4});
  const std::vector<int64_t> want = {1, 3, 0, /**/ 0, 1, 2};
  EXPECT_EQ(ops::topk_indices(x, 3).to_int_vector(), want);
}

}  // namespace
}  // namespace smelt
