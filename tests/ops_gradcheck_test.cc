// Every differentiable op: analytic gradients against central finite differences (f32, ε = 1e-2,
// |analytic − numeric| ≤ 1e-3 + 1e-2·|numeric|: truncation O(ε²·|f'''|) ≈ 1e-4 and round-off
// O(ulp·|L|/ε) ≈ 1e-5 for these O(1) inputs), including non-contiguous and broadcast inputs.
#include "autograd/grad_mode.h"
#include "ops/ops.h"
#include "runtime/storage.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

using testing::rand_param;
using Inputs = std::vector<Tensor>;

TEST(Gradcheck, BinaryOpsWithBroadcasting) {
  Tensor a = rand_param({3, 4, 5}, 1), b = rand_param({4, 1}, 2), c = rand_param({5}, 3, 0.5f, 1.5f);
  EXPECT_GRADCHECK([](const Inputs& x) { return ops::add(x[0], x[1]); }, Inputs{a, b});
  EXPECT_GRADCHECK([](const Inputs& x) { return ops::sub(x[1], x[0]); }, Inputs{a, b});
  EXPECT_GRADCHECK([](const Inputs& x) { return ops::mul(x[0], x[1]); }, Inputs{a, b});
  EXPECT_GRADCHECK([](const Inputs& x) { return ops::div(x[0], x[1]); }, Inputs{a, c});
  EXPECT_GRADCHECK([](const Inputs& x) { return ops::mul(ops::add(x[0], 0.5f), 3.0f); }, Inputs{a});
}

TEST(Gradcheck, NonContiguousInputs) {
  Tensor a = rand_param({4, 6}, 4), b = rand_param({6, 4}, 5);
  // a transposed view is non-contiguous; b sliced with a step too
  EXPECT_GRADCHECK([](const Inputs& x) { return ops::mul(ops::transpose(x[0], 0, 1), x[1]); }, Inputs{a, b});
  EXPECT_GRADCHECK([](const Inputs& x) { return ops::exp(ops::slice(x[0], 1, 1, 6, 2)); }, Inputs{a});
  EXPECT_GRADCHECK([](const Inputs& x) { return ops::matmul(ops::transpose(x[1], 0, 1), ops::transpose(x[0], 0, 1)); }, Inputs{a, b});
}

TEST(Gradcheck, UnaryOps) {
  Tensor x = rand_param({2, 7}, 6, -2.0f, 2.0f), p = rand_param({2, 7}, 7, 0.5f, 2.0f);
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::neg(v[0]); }, Inputs{x});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::exp(v[0]); }, Inputs{x});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::log(v[0]); }, Inputs{p});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::sqrt(v[0]); }, Inputs{p});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::rsqrt(v[0]); }, Inputs{p});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::pow(v[0], 3.0f); }, Inputs{x});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::pow(v[0], -1.5f); }, Inputs{p});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::sigmoid(v[0]); }, Inputs{x});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::tanh(v[0]); }, Inputs{x});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::silu(v[0]); }, Inputs{x});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::gelu(v[0]); }, Inputs{x});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::swiglu(v[0], v[1]); }, Inputs{x, p});
}

TEST(Gradcheck, Reductions) {
  Tensor x = rand_param({3, 4, 5}, 8);
  // max needs values farther apart than 2ε, or a finite difference can change which one wins
  std::vector<float> spaced(60);
  for (int i = 0; i < 60; ++i) spaced[i] = 0.05f * static_cast<float>((i * 37) % 60) - 1.5f;
  Tensor xs = Tensor::from_vector(spaced, {3, 4, 5});
  xs.set_requires_grad(true);
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::sum(v[0], {1}); }, Inputs{x});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::sum(v[0], {0, 2}, true); }, Inputs{x});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::mean(v[0], {-1}); }, Inputs{x});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::mean(v[0]); }, Inputs{x});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::max(v[0], 1); }, Inputs{xs});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::max(v[0], 0, true); }, Inputs{xs});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::max(ops::transpose(v[0], 0, 2), 0, true); }, Inputs{xs});
}

TEST(Gradcheck, MatmulAllTransposesAndBatches) {
  Tensor a = rand_param({5, 3}, 9), b = rand_param({3, 4}, 10), bt = rand_param({4, 3}, 11);
  Tensor ba = rand_param({2, 5, 3}, 12), bb = rand_param({2, 3, 4}, 13);
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::matmul(v[0], v[1]); }, Inputs{a, b});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::matmul(v[0], ops::transpose(v[1], 0, 1)); }, Inputs{a, bt});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::matmul(ops::transpose(v[1], 0, 1), ops::transpose(v[0], 0, 1)); }, Inputs{a, b});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::matmul(v[0], v[1]); }, Inputs{ba, bb});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::matmul(v[0], v[1]); }, Inputs{ba, b});  // shared 2-D b
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::linear(v[0], v[1]); }, Inputs{ba, bt});
}

TEST(Gradcheck, ShapeOps) {
  Tensor x = rand_param({2, 3, 4}, 14), y = rand_param({2, 2, 4}, 15);
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::reshape(v[0], {6, -1}); }, Inputs{x});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::reshape(ops::permute(v[0], {2, 0, 1}), {4, 6}); }, Inputs{x});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::contiguous(ops::permute(v[0], {1, 2, 0})); }, Inputs{x});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::slice(v[0], -1, 1, 4, 2); }, Inputs{x});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::cat({v[0], v[1]}, 1); }, Inputs{x, y});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::expand(ops::slice(v[0], 1, 0, 1), {2, 5, 4}); }, Inputs{x});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::squeeze(ops::unsqueeze(v[0], 1), 1); }, Inputs{x});
}

TEST(Gradcheck, IndexOps) {
  Tensor w = rand_param({6, 3}, 16), x = rand_param({3, 5}, 17), src = rand_param({3, 2}, 18);
  Tensor ids = Tensor::from_ints({1, 5, 1, 0}, {2, 2});
  Tensor sel = Tensor::from_ints({4, 0, 4}, {3}, DType::I32);
  Tensor g = Tensor::from_ints({0, 4, 2, 2, 3, 1}, {3, 2});
  EXPECT_GRADCHECK([=](const Inputs& v) { return ops::embedding(v[0], ids); }, Inputs{w});
  EXPECT_GRADCHECK([=](const Inputs& v) { return ops::index_select(v[0], 1, sel); }, Inputs{x});
  EXPECT_GRADCHECK([=](const Inputs& v) { return ops::gather(v[0], 1, g); }, Inputs{x});
  EXPECT_GRADCHECK([=](const Inputs& v) { return ops::scatter_add(v[0], 1, g, v[1]); }, Inputs{x, src});
}

TEST(Gradcheck, NormRopeSoftmax) {
  Tensor x = rand_param({2, 3, 8}, 19), w = rand_param({8}, 20, 0.5f, 1.5f);
  Tensor q = rand_param({2, 3, 2, 6}, 21);
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::rms_norm(v[0], v[1], 1e-5f); }, Inputs{x, w});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::rms_norm(ops::transpose(v[0], 0, 1), v[1], 1e-5f); }, Inputs{x, w});
  // The fused residual add + norm, both outputs used (as a block uses them).
  Tensor y = rand_param({2, 3, 8}, 22);
  EXPECT_GRADCHECK(
      [](const Inputs& v) {
        const ops::ResidualNorm r = ops::add_rms_norm(v[0], v[1], v[2], 1e-5f);
        return ops::add(r.normed, ops::mul(ops::mul(r.sum, r.sum), 0.25f));
      },
      Inputs{x, y, w});
  // Only some inputs need a gradient: the others are constants.
  const Tensor y_const = y.detach(), w_const = w.detach(), x_const = x.detach();
  EXPECT_GRADCHECK([=](const Inputs& v) { return ops::add_rms_norm(v[0], y_const, w_const, 1e-5f).normed; }, Inputs{x});
  EXPECT_GRADCHECK([=](const Inputs& v) { return ops::add_rms_norm(x_const, y_const, v[0], 1e-5f).normed; }, Inputs{w});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::rope(v[0], 10000.0f, 3, 2.0f); }, Inputs{q});
  // A fresh tensor nothing else holds is rotated in place (forward and backward): same result.
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::rope(ops::add(v[0], v[0]), 10000.0f, 3, 2.0f); }, Inputs{q});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::softmax(v[0]); }, Inputs{x});
  EXPECT_GRADCHECK([](const Inputs& v) { return ops::log_softmax(v[0]); }, Inputs{x});
}

TEST(Gradcheck, AttentionCausalGqa) {
  Tensor q = rand_param({2, 5, 4, 6}, 22), k = rand_param({2, 5, 2, 6}, 23), v = rand_param({2, 5, 2, 6}, 24);
  EXPECT_GRADCHECK([](const Inputs& t) { return ops::attention(t[0], t[1], t[2], true); }, Inputs{q, k, v});
  EXPECT_GRADCHECK([](const Inputs& t) { return ops::attention(t[0], t[1], t[2], false); }, Inputs{q, k, v});
  // decode-style: fewer queries than keys
  Tensor q2 = rand_param({1, 2, 4, 6}, 25);
  EXPECT_GRADCHECK([](const Inputs& t) { return ops::attention(t[0], t[1], t[2], true); }, Inputs{q2, ops::slice(k, 0, 0, 1).detach().set_requires_grad(true), ops::slice(v, 0, 0, 1).detach().set_requires_grad(true)});
}

TEST(Gradcheck, AttentionAcrossQueryBlocks) {
  // T = 70 spans three causal query blocks (of 32): the skipped upper-triangle tiles must not matter.
  Tensor q = rand_param({1, 70, 2, 4}, 27), k = rand_param({1, 70, 1, 4}, 28), v = rand_param({1, 70, 1, 4}, 29);
  GradcheckOptions o;
  o.atol = 2e-3;  // the projected loss sums 560 outputs: round-off in L grows with it
  EXPECT_GRADCHECK([](const Inputs& t) { return ops::attention(t[0], t[1], t[2], true); }, Inputs{q, k, v}, o);
  // Forward against a plain loop.
  NoGradGuard g;
  std::vector<float> out = ops::attention(q, k, v, true).to_vector();
  auto qv = q.to_vector(), kv = k.to_vector(), vv = v.to_vector();
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t i = 0; i < 70; ++i) {
      std::vector<double> w(i + 1);
      double mx = -1e300, sum = 0;
      for (int64_t j = 0; j <= i; ++j) {
        double dot = 0;
        for (int64_t c = 0; c < 4; ++c) dot += qv[(i * 2 + h) * 4 + c] * kv[j * 4 + c];
        w[j] = dot / 2.0;  // 1/sqrt(4)
        mx = std::max(mx, w[j]);
      }
      for (auto& x : w) sum += (x = std::exp(x - mx));
      for (int64_t c = 0; c < 4; ++c) {
        double o = 0;
        for (int64_t j = 0; j <= i; ++j) o += w[j] / sum * vv[j * 4 + c];
        ASSERT_NEAR(out[(i * 2 + h) * 4 + c], o, 1e-5) << "query " << i << " head " << h;
      }
    }
}

// Attention written out: every (batch, query, head) against its visible keys, in double.
std::vector<double> reference_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  const int64_t B = q.size(0), Tq = q.size(1), H = q.size(2), D = q.size(3), Tk = k.size(1), Hkv = k.size(2);
  const auto qv = q.to_vector(), kv = k.to_vector(), vv = v.to_vector();
  std::vector<double> out(static_cast<size_t>(B * Tq * H * D));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Tq; ++i)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t g = h / (H / Hkv), visible = causal ? i + (Tk - Tq) + 1 : Tk;
        std::vector<double> w(visible);
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j < visible; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < D; ++c) dot += qv[((b * Tq + i) * H + h) * D + c] * kv[((b * Tk + j) * Hkv + g) * D + c];
          w[j] = dot / std::sqrt(static_cast<double>(D));
          mx = std::max(mx, w[j]);
        }
        for (auto& x : w) sum += (x = std::exp(x - mx));
        for (int64_t c = 0; c < D; ++c) {
          double o = 0;
          for (int64_t j = 0; j < visible; ++j) o += w[j] / sum * vv[((b * Tk + j) * Hkv + g) * D + c];
          out[((b * Tq + i) * H + h) * D + c] = o;
        }
      }
  return out;
}

TEST(Gradcheck, AttentionWithManyKeysAgainstPlainLoop) {
  // Head dim 8 and more than 64 keys: the scores go through the narrow GEMM path widened for
  // short K, against contiguous copies of Kᵀ (8 queries and more). Causal self-attention,
  // non-causal with more keys than queries, a causal chunk of queries after cached keys, GQA.
  struct Case { int64_t B, Tq, Tk, H, Hkv; bool causal; };
  for (const Case& c : {Case{1, 96, 96, 2, 1, true}, Case{2, 12, 80, 4, 2, false}, Case{1, 10, 90, 4, 2, true}, Case{1, 3, 72, 2, 2, true}}) {
    Tensor q = rand_param({c.B, c.Tq, c.H, 8}, 40), k = rand_param({c.B, c.Tk, c.Hkv, 8}, 41), v = rand_param({c.B, c.Tk, c.Hkv, 8}, 42);
    NoGradGuard g;
    const std::vector<float> out = ops::attention(q, k, v, c.causal).to_vector();
    const std::vector<double> want = reference_attention(q, k, v, c.causal);
    for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], want[i], 1e-5) << "Tq " << c.Tq << " Tk " << c.Tk << " element " << i;
  }
  Tensor q = rand_param({1, 96, 2, 8}, 43), k = rand_param({1, 96, 1, 8}, 44), v = rand_param({1, 96, 1, 8}, 45);
  GradcheckOptions o;
  o.atol = 3e-3;  // the projected loss sums 1536 outputs
  EXPECT_GRADCHECK([](const Inputs& t) { return ops::attention(t[0], t[1], t[2], true); }, Inputs{q, k, v}, o);
}

TEST(Gradcheck, AttentionKeepsNoSequenceSquaredBuffer) {
  // What a forward leaves alive for backward is the output and one log-sum-exp per query row:
  // linear in T. The T×T probabilities of 2 heads at T = 1024 would be 8 MiB.
  const int64_t T = 1024, H = 2, D = 16;
  Tensor q = rand_param({1, T, H, D}, 30), k = rand_param({1, T, H, D}, 31), v = rand_param({1, T, H, D}, 32);
  const int64_t before = Storage::live_bytes();
  Tensor out = ops::attention(q, k, v, true);
  const int64_t kept = Storage::live_bytes() - before;
  const int64_t linear = (T * H * D + T * H) * 4;  // the output and the log-sum-exp
  EXPECT_LE(kept, linear + 4096) << "attention kept " << kept << " bytes for backward";
  ops::sum(out).backward();
  EXPECT_TRUE(q.grad().defined() && k.grad().defined() && v.grad().defined());
}

TEST(Gradcheck, CrossEntropyWithIgnoreAndMask) {
  Tensor logits = rand_param({5, 7}, 26, -2.0f, 2.0f);
  Tensor targets = Tensor::from_ints({3, -100, 0, 6, 2}, {5});
  Tensor weights = Tensor::from_vector({1.0f, 1.0f, 0.0f, 2.0f, 0.5f}, {5});
  EXPECT_GRADCHECK([=](const Inputs& v) { return ops::cross_entropy(v[0], targets); }, Inputs{logits});
  EXPECT_GRADCHECK([=](const Inputs& v) { return ops::cross_entropy(v[0], targets, -100, weights); }, Inputs{logits});
}

TEST(Gradcheck, LinearCrossEntropyInChunks) {
  Tensor hidden = rand_param({2, 3, 4}, 27, -1.0f, 1.0f);
  Tensor weight = rand_param({7, 4}, 28, -1.0f, 1.0f);
  Tensor targets = Tensor::from_ints({3, -100, 0, 6, 2, 5}, {6});
  Tensor weights = Tensor::from_vector({1.0f, 1.0f, 0.0f, 2.0f, 0.5f, 1.0f}, {6});
  EXPECT_GRADCHECK([=](const Inputs& v) { return ops::linear_cross_entropy(v[0], v[1], targets, -100, weights, 4); },
                   Inputs{hidden, weight});
}

// The fused op against cross_entropy(linear(...)): same loss and same gradients for every chunk
// size (one row, a size that leaves a remainder, all rows at once), with the weight also used by
// another op (tied embeddings) so that its gradients add up.
TEST(Ops, LinearCrossEntropyEqualsLinearThenCrossEntropy) {
  const int64_t N = 13, C = 8, V = 11;
  Tensor targets = Tensor::from_ints({3, -100, 0, 10, 2, 5, 7, 7, 1, 0, 9, 4, 6}, {N});
  std::vector<float> wv(N, 1.0f);
  wv[4] = 0.0f;
  wv[6] = 2.5f;
  Tensor weights = Tensor::from_vector(wv, {N});
  auto run = [&](int64_t chunk, std::vector<float>* dh, std::vector<float>* dw) {
    Tensor hidden = rand_param({N, C}, 41, -1.0f, 1.0f);
    Tensor weight = rand_param({V, C}, 42, -1.0f, 1.0f);
    Tensor other = ops::mul(ops::sum(ops::mul(weight, weight)), 0.1f);  // a second use of the weight
    Tensor loss = chunk < 0 ? ops::cross_entropy(ops::linear(hidden, weight), targets, -100, weights)
                            : ops::linear_cross_entropy(hidden, weight, targets, -100, weights, chunk);
    const float value = loss.item();
    ops::mul(ops::add(loss, other), 3.0f).backward();  // an upstream gradient other than 1
    *dh = hidden.grad().to_vector();
    *dw = weight.grad().to_vector();
    return value;
  };
  std::vector<float> ref_dh, ref_dw;
  const float ref = run(-1, &ref_dh, &ref_dw);
  for (int64_t chunk : {1, 5, 0}) {
    std::vector<float> dh, dw;
    EXPECT_NEAR(run(chunk, &dh, &dw), ref, 1e-5) << "chunk " << chunk;
    for (size_t i = 0; i < dh.size(); ++i) EXPECT_NEAR(dh[i], ref_dh[i], 1e-5) << "chunk " << chunk << " d hidden " << i;
    for (size_t i = 0; i < dw.size(); ++i) EXPECT_NEAR(dw[i], ref_dw[i], 1e-5) << "chunk " << chunk << " d weight " << i;
  }
  NoGradGuard no_grad;
  Tensor hidden = rand_param({N, C}, 41, -1.0f, 1.0f), weight = rand_param({V, C}, 42, -1.0f, 1.0f);
  EXPECT_NEAR(ops::linear_cross_entropy(hidden, weight, targets, -100, weights, 4).item(), ref, 1e-5);
  EXPECT_THROW(ops::linear_cross_entropy(hidden, Tensor::zeros({V, C + 1}), targets), Error);
  EXPECT_THROW(ops::linear_cross_entropy(hidden, weight, Tensor::from_ints({V}, {1})), Error);
}

TEST(Ops, RopeRotatesAFreshTensorInPlace) {
  const Tensor x = rand_param({2, 5, 3, 8}, 51);
  const Tensor held = ops::add(x, x);
  const std::vector<float> copy = ops::rope(held, 10000.0f, 3).to_vector();  // `held` is kept: a new tensor
  const int64_t bytes = x.numel() * 4, before = Storage::live_bytes();
  Storage::reset_peak_live_bytes();
  const Tensor rotated = ops::rope(ops::add(x, x), 10000.0f, 3);
  EXPECT_EQ(Storage::peak_live_bytes() - before, bytes);  // only the sum ever existed
  EXPECT_EQ(rotated.to_vector(), copy);
  // A tensor the caller keeps is never overwritten, even when its handle is the only one.
  Tensor kept = ops::add(x, x);
  const std::vector<float> values = kept.to_vector();
  const Tensor other = ops::rope(kept, 10000.0f, 3);
  EXPECT_EQ(kept.to_vector(), values);
  EXPECT_EQ(other.to_vector(), copy);
}

TEST(Ops, CrossEntropyMatchesHandComputedValue) {
  // logits row [0, ln 3] with target 1: p = 3/4, loss = ln(4/3); the ignored row counts for nothing.
  Tensor logits = Tensor::from_vector({0.0f, std::log(3.0f), 5.0f, -1.0f}, {2, 2});
  Tensor targets = Tensor::from_ints({1, -100}, {2});
  EXPECT_NEAR(ops::cross_entropy(logits, targets).item(), std::log(4.0 / 3.0), 1e-6);
}

TEST(Ops, BadArgumentsThrowClearErrors) {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4, 5});
  EXPECT_THROW(ops::add(a, b), Error);
  EXPECT_THROW(ops::matmul(a, a), Error);
  EXPECT_THROW(ops::embedding(Tensor::zeros({4, 2}), Tensor::from_ints({7}, {1})), Error);
  try {
    ops::matmul(a, a);
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("[2, 3]"), std::string::npos) << e.message();
  }
}

}  // namespace
}  // namespace smelt

namespace smelt {
namespace {

TEST(Gradcheck, AttentionOverPackedDocuments) {
  // Two documents packed into one sequence of 9 (4 + 5 tokens): with key_start, each document's
  // outputs equal attention over that document alone, and the gradient checks.
  const Tensor q = rand_param({1, 9, 2, 4}, 31), k = rand_param({1, 9, 1, 4}, 32), v = rand_param({1, 9, 1, 4}, 33);
  const Tensor starts = Tensor::from_ints({0, 0, 0, 0, 4, 4, 4, 4, 4}, {1, 9});
  EXPECT_GRADCHECK([&](const Inputs& t) { return ops::attention(t[0], t[1], t[2], true, 0.0f, starts); }, Inputs{q, k, v});
  NoGradGuard g;
  const std::vector<float> packed = ops::attention(q, k, v, true, 0.0f, starts).to_vector();
  auto piece = [](const Tensor& x, int64_t a, int64_t b) { return ops::contiguous(ops::slice(x, 1, a, b)); };
  const std::vector<float> first = ops::attention(piece(q, 0, 4), piece(k, 0, 4), piece(v, 0, 4), true).to_vector();
  const std::vector<float> second = ops::attention(piece(q, 4, 9), piece(k, 4, 9), piece(v, 4, 9), true).to_vector();
  for (size_t i = 0; i < first.size(); ++i) EXPECT_NEAR(packed[i], first[i], 1e-6);
  for (size_t i = 0; i < second.size(); ++i) EXPECT_NEAR(packed[first.size() + i], second[i], 1e-6);
  EXPECT_THROW(ops::attention(q, k, v, true, 0.0f, Tensor::from_ints({0, 0, 0, 0, 5, 5, 5, 5, 5}, {1, 9})), Error);  // query 4 would see nothing
}

}  // namespace
}  // namespace smelt
