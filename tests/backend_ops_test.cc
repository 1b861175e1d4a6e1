// Every whole op, forward and backward, on every registered backend against the CPU (ggml's
// test-backend-ops). Each case builds its inputs on the host from a fixed seed, moves them to
// the device, runs the public op (so the op file's checks, allocation and backward run too),
// takes L = Σ out ⊙ w for a fixed random w and its gradients, and brings everything back.
//  - On the CPU the forward is compared with a plain scalar loop, and the backward with central
//    finite differences (gradcheck).
//  - On any other backend, forward and gradients are compared with the CPU's, within a tolerance
//    derived from the dtype and the case's reduction length.
// The sim device (tests/support/) is always registered, so the harness runs in CI without a GPU;
// CUDA joins when the build has it and a GPU is present. An op a backend lacks is reported.
#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "ops/backend.h"
#include "ops/moe.h"
#include "ops/ops.h"
#include "ops/optimizer_ops.h"
#include "ops/random.h"
#include "runtime/device_backend.h"
#include "runtime/rng.h"
#include "tests/support/sim_device.h"

namespace smelt {
namespace {

using Inputs = std::vector<Tensor>;
using Values = std::vector<float>;

struct InputSpec {
  Shape shape;
  float lo = -1.0f, hi = 1.0f;
};

struct OpCase {
  std::string name;
  std::vector<OpKind> covers;  // the whole ops this case runs (forward and backward)
  std::vector<InputSpec> inputs;
  std::function<Tensor(const Inputs&)> fn;
  // The forward by plain loops over the inputs' row-major values.
  std::function<Values(const std::vector<Values>&)> reference;
  int64_t reduction_length = 1;  // longest sum behind one output or gradient element
  bool differentiable = true;    // false: forward only (optimizer steps)
  DType dtype = DType::F32;      // the dtype the case asks the backend for (bf16: weights kept in bf16)
};

Inputs make_inputs(const OpCase& c, Device device) {
  Inputs out;
  uint64_t seed = 17;
  for (const InputSpec& s : c.inputs) {
    Philox rng(seed++);
    Tensor t = Tensor::uniform(s.shape, rng, s.lo, s.hi).to(device);
    t.set_requires_grad(true);
    out.push_back(t);
  }
  return out;
}

// Forward values, then each input's gradient of Σ out ⊙ w, all on the host.
std::vector<Values> run_case(const OpCase& c, Device device) {
  Inputs in = make_inputs(c, device);
  Tensor out = c.fn(in);
  if (!c.differentiable) return {out.to_vector()};
  Philox rng(99);
  Tensor w = Tensor::uniform(out.shape(), rng, -1.0f, 1.0f).to(device);
  ops::sum(ops::mul(out, w)).backward();
  std::vector<Values> r{out.to_vector()};
  for (const Tensor& t : in) r.push_back(t.grad().defined() ? t.grad().to_vector() : Values{});
  return r;
}

// ---- scalar references ----

Values map1(const Values& x, const std::function<float(float)>& f) {
  Values y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = f(x[i]);
  return y;
}

// [rows, cols] row-major → its transpose.
Values transposed(const Values& x, int64_t rows, int64_t cols) {
  Values y(x.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) y[c * rows + r] = x[r * cols + c];
  return y;
}

Values rms_norm_ref(const Values& x, const Values* residual, const Values& w, int64_t C, float eps) {
  Values y(x.size());
  for (size_t r = 0; r < x.size() / C; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < C; ++i) {
      const double v = x[r * C + i] + (residual ? (*residual)[r * C + i] : 0.0);
      ss += v * v;
    }
    const double s = 1.0 / std::sqrt(ss / C + eps);
    for (int64_t i = 0; i < C; ++i) y[r * C + i] = static_cast<float>((x[r * C + i] + (residual ? (*residual)[r * C + i] : 0.0)) * s * w[i]);
  }
  return y;
}

// Causal GQA attention by plain loops: q [B, T, Hq, D], k and v [B, T, Hkv, D], queries of batch b
// at position i see keys [first_key[b][i], i].
Values attention_ref(const Values& q, const Values& k, const Values& v, int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D,
                     const std::vector<int64_t>& first_key) {
  Values o(q.size(), 0.0f);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < T; ++i) {
        const int64_t g = h / (Hq / Hkv), j0 = first_key.empty() ? 0 : first_key[b * T + i];
        std::vector<double> w;
        double m = -1e300, z = 0;
        for (int64_t j = j0; j <= i; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < D; ++c) dot += q[((b * T + i) * Hq + h) * D + c] * k[((b * T + j) * Hkv + g) * D + c];
          w.push_back(dot * scale);
          m = std::max(m, w.back());
        }
        for (double& x : w) z += (x = std::exp(x - m));
        for (int64_t j = j0; j <= i; ++j)
          for (int64_t c = 0; c < D; ++c) o[((b * T + i) * Hq + h) * D + c] += static_cast<float>(w[j - j0] / z * v[((b * T + j) * Hkv + g) * D + c]);
      }
  return o;
}

Values softmax_ref(const Values& x, int64_t C, bool log) {
  Values y(x.size());
  for (size_t r = 0; r < x.size() / C; ++r) {
    double m = -std::numeric_limits<double>::infinity(), z = 0;
    for (int64_t i = 0; i < C; ++i) m = std::max<double>(m, x[r * C + i]);
    for (int64_t i = 0; i < C; ++i) z += std::exp(x[r * C + i] - m);
    for (int64_t i = 0; i < C; ++i) {
      const double v = x[r * C + i] - m;
      y[r * C + i] = static_cast<float>(log ? v - std::log(z) : std::exp(v) / z);
    }
  }
  return y;
}

OpCase unary_case(const std::string& name, Tensor (*op)(const Tensor&), float (*ref)(float), float lo = -2.0f, float hi = 2.0f) {
  // A transposed view: the op packs it first.
  return {name, {OpKind::Unary, OpKind::UnaryBackward}, {{{9, 7}, lo, hi}},
          [op](const Inputs& x) { return op(ops::transpose(x[0], 0, 1)); },
          [ref](const std::vector<Values>& x) { return map1(transposed(x[0], 9, 7), ref); }};
}

std::vector<OpCase> all_cases() {
  std::vector<OpCase> cases;
  const std::vector<std::pair<BinaryOp, std::string>> binaries = {
      {BinaryOp::Add, "add"}, {BinaryOp::Sub, "sub"}, {BinaryOp::Mul, "mul"}, {BinaryOp::Div, "div"}};
  for (const auto& [op, name] : binaries) {
    auto fn = [op = op](const Tensor& a, const Tensor& b) {
      switch (op) {
        case BinaryOp::Add: return ops::add(a, b);
        case BinaryOp::Sub: return ops::sub(a, b);
        case BinaryOp::Mul: return ops::mul(a, b);
        case BinaryOp::Div: return ops::div(a, b);
      }
      return Tensor();
    };
    auto scalar = [op = op](float a, float b) {
      switch (op) {
        case BinaryOp::Add: return a + b;
        case BinaryOp::Sub: return a - b;
        case BinaryOp::Mul: return a * b;
        case BinaryOp::Div: return a / b;
      }
      return 0.0f;
    };
    // a: [3, 129] from a transposed [129, 3]; b broadcast along rows ([129]); a bare scalar.
    cases.push_back({name + " broadcast", {OpKind::Binary, OpKind::SumAxis}, {{{129, 3}}, {{129}, 0.5f, 1.5f}},
                     [fn](const Inputs& x) { return fn(ops::transpose(x[0], 0, 1), x[1]); },
                     [scalar](const std::vector<Values>& x) {
                       Values a = transposed(x[0], 129, 3), y(a.size());
                       for (size_t i = 0; i < a.size(); ++i) y[i] = scalar(a[i], x[1][i % 129]);
                       return y;
                     },
                     3});
    cases.push_back({name + " scalar", {OpKind::Binary, OpKind::SumAxis}, {{{5, 7}}, {{}, 0.5f, 1.5f}},
                     [fn](const Inputs& x) { return fn(x[0], x[1]); },
                     [scalar](const std::vector<Values>& x) { return map1(x[0], [&](float v) { return scalar(v, x[1][0]); }); },
                     35});
  }
  cases.push_back(unary_case("neg", ops::neg, [](float v) { return -v; }));
  cases.push_back(unary_case("exp", ops::exp, [](float v) { return std::exp(v); }));
  cases.push_back(unary_case("log", ops::log, [](float v) { return std::log(v); }, 0.5f, 2.0f));
  cases.push_back(unary_case("sqrt", ops::sqrt, [](float v) { return std::sqrt(v); }, 0.5f, 2.0f));
  cases.push_back(unary_case("rsqrt", ops::rsqrt, [](float v) { return 1.0f / std::sqrt(v); }, 0.5f, 2.0f));
  cases.push_back(unary_case("abs", ops::abs, [](float v) { return std::fabs(v); }));
  cases.push_back(unary_case("sigmoid", ops::sigmoid, [](float v) { return 1.0f / (1.0f + std::exp(-v)); }));
  cases.push_back(unary_case("tanh", ops::tanh, [](float v) { return std::tanh(v); }));
  cases.push_back(unary_case("silu", ops::silu, [](float v) { return v / (1.0f + std::exp(-v)); }));
  cases.push_back(unary_case("gelu", ops::gelu, [](float v) {
    return 0.5f * v * (1.0f + std::tanh(0.7978845608028654f * (v + 0.044715f * v * v * v)));
  }));
  cases.push_back({"pow, add and mul by scalars", {OpKind::Unary, OpKind::UnaryBackward}, {{{7, 9}, 0.5f, 2.0f}},
                   [](const Inputs& x) { return ops::mul(ops::add(ops::pow(x[0], 1.5f), 0.25f), -3.0f); },
                   [](const std::vector<Values>& x) { return map1(x[0], [](float v) { return (std::pow(v, 1.5f) + 0.25f) * -3.0f; }); }});
  cases.push_back({"swiglu", {OpKind::Swiglu, OpKind::SwigluBackward}, {{{5, 33}}, {{5, 33}}},
                   [](const Inputs& x) { return ops::swiglu(x[0], x[1]); },
                   [](const std::vector<Values>& x) {
                     Values y(x[0].size());
                     for (size_t i = 0; i < y.size(); ++i) y[i] = x[0][i] / (1.0f + std::exp(-x[0][i])) * x[1][i];
                     return y;
                   }});
  cases.push_back({"sum over axes 0 and 2 of a permuted view", {OpKind::SumAxis}, {{{7, 4, 9}}},
                   [](const Inputs& x) { return ops::sum(ops::transpose(x[0], 0, 1), {0, 2}); },
                   [](const std::vector<Values>& x) {
                     Values y(7, 0.0f);  // x is [7, 4, 9]; the view is [4, 7, 9]; keep axis 1 (size 7)
                     for (int64_t a = 0; a < 7; ++a)
                       for (int64_t b = 0; b < 4; ++b)
                         for (int64_t c = 0; c < 9; ++c) y[a] += x[0][(a * 4 + b) * 9 + c];
                     return y;
                   },
                   36});
  // Values spread over [-50, 50]: no two within the finite-difference step of each other.
  cases.push_back({"max over the middle axis", {OpKind::MaxAxis, OpKind::ScatterAdd}, {{{3, 17, 5}, -50.0f, 50.0f}},
                   [](const Inputs& x) { return ops::max(x[0], 1); },
                   [](const std::vector<Values>& x) {
                     Values y(15, -1e30f);
                     for (int64_t a = 0; a < 3; ++a)
                       for (int64_t b = 0; b < 17; ++b)
                         for (int64_t c = 0; c < 5; ++c) y[a * 5 + c] = std::max(y[a * 5 + c], x[0][(a * 17 + b) * 5 + c]);
                     return y;
                   }});
  // Products: batched with a transposed a, and a shared 2-D b read transposed (a linear layer).
  cases.push_back({"batched matmul, a transposed", {OpKind::Matmul}, {{{2, 7, 5}}, {{2, 7, 3}}},
                   [](const Inputs& x) { return ops::matmul(ops::transpose(x[0], 1, 2), x[1]); },
                   [](const std::vector<Values>& x) {
                     Values y(2 * 5 * 3, 0.0f);
                     for (int64_t b = 0; b < 2; ++b)
                       for (int64_t i = 0; i < 5; ++i)
                         for (int64_t j = 0; j < 3; ++j)
                           for (int64_t k = 0; k < 7; ++k) y[(b * 5 + i) * 3 + j] += x[0][(b * 7 + k) * 5 + i] * x[1][(b * 7 + k) * 3 + j];
                     return y;
                   },
                   7});
  cases.push_back({"linear (shared weight, transposed)", {OpKind::Matmul}, {{{3, 4, 33}}, {{17, 33}}},
                   [](const Inputs& x) { return ops::linear(x[0], x[1]); },
                   [](const std::vector<Values>& x) {
                     Values y(12 * 17, 0.0f);
                     for (int64_t r = 0; r < 12; ++r)
                       for (int64_t j = 0; j < 17; ++j)
                         for (int64_t k = 0; k < 33; ++k) y[r * 17 + j] += x[0][r * 33 + k] * x[1][j * 33 + k];
                     return y;
                   },
                   33});
  // Causal GQA attention: 4 query heads on 2 kv heads, 9 positions (more than one query block
  // still, but odd), and again with packed documents (key starts).
  for (bool packed : {false, true}) {
    const std::vector<int64_t> starts = packed ? std::vector<int64_t>{0, 0, 0, 3, 3, 3, 3, 7, 7, 0, 1, 1, 1, 1, 5, 5, 5, 5}
                                               : std::vector<int64_t>{};
    cases.push_back({packed ? "attention, GQA, packed documents" : "attention, GQA, causal", {OpKind::Attention, OpKind::AttentionBackward},
                     {{{2, 9, 4, 8}}, {{2, 9, 2, 8}}, {{2, 9, 2, 8}}},
                     [starts](const Inputs& x) {
                       const Tensor ks = starts.empty() ? Tensor() : Tensor::from_ints(starts, {2, 9}, DType::I32, x[0].device());
                       return ops::attention(x[0], x[1], x[2], true, 0.0f, ks);
                     },
                     [starts](const std::vector<Values>& x) { return attention_ref(x[0], x[1], x[2], 2, 9, 4, 2, 8, starts); },
                     9 * 8});
  }
  cases.push_back({"attention, 37 positions (two query blocks)", {OpKind::Attention, OpKind::AttentionBackward},
                   {{{1, 37, 4, 8}}, {{1, 37, 2, 8}}, {{1, 37, 2, 8}}},
                   [](const Inputs& x) { return ops::attention(x[0], x[1], x[2], true, 0.0f, Tensor()); },
                   [](const std::vector<Values>& x) { return attention_ref(x[0], x[1], x[2], 1, 37, 4, 2, 8, {}); },
                   37 * 8});
  // MoE: 5 tokens, 3 experts, 7 slots (a token in two slots, one in none, one slot dropped with
  // expert −1, expert 2 chosen by nobody); top-k indices feed the routing weights' gather.
  cases.push_back({"moe_ffn with a dropped slot and an idle expert", {OpKind::MoePermute, OpKind::MoeExperts, OpKind::MoeExpertsBackward},
                   {{{5, 6}}, {{3, 4, 6}}, {{3, 4, 6}}, {{3, 6, 4}}, {{7}, 0.2f, 1.0f}},
                   [](const Inputs& x) {
                     const Device d = x[0].device();
                     return ops::moe_ffn(x[0], x[1], x[2], x[3], Tensor::from_ints({0, 1, 1, 3, 4, 0, 2}, {7}, DType::I64, d),
                                         Tensor::from_ints({1, 0, 1, 0, -1, 0, 1}, {7}, DType::I32, d), x[4]);
                   },
                   [](const std::vector<Values>& x) {
                     const int64_t tok[7] = {0, 1, 1, 3, 4, 0, 2}, ex[7] = {1, 0, 1, 0, -1, 0, 1};
                     Values y(30, 0.0f);
                     for (int64_t s = 0; s < 7; ++s) {
                       if (ex[s] < 0) continue;
                       std::vector<double> act(4);
                       for (int64_t f = 0; f < 4; ++f) {
                         double g = 0, u = 0;
                         for (int64_t c = 0; c < 6; ++c) {
                           g += x[1][(ex[s] * 4 + f) * 6 + c] * x[0][tok[s] * 6 + c];
                           u += x[2][(ex[s] * 4 + f) * 6 + c] * x[0][tok[s] * 6 + c];
                         }
                         act[f] = g / (1 + std::exp(-g)) * u;
                       }
                       for (int64_t c = 0; c < 6; ++c) {
                         double o = 0;
                         for (int64_t f = 0; f < 4; ++f) o += x[3][(ex[s] * 6 + c) * 4 + f] * act[f];
                         y[tok[s] * 6 + c] += static_cast<float>(x[4][s] * o);
                       }
                     }
                     return y;
                   },
                   24});
  // Routing 6 tokens (the last one padding) over 4 experts, top-2 with capacity 1.0: the slots'
  // gathered scores, their experts (−1 dropped) and the counts; scores far apart, so no finite-
  // difference step flips a choice.
  cases.push_back({"moe_route top-2 with capacity", {OpKind::MoeRoute, OpKind::IndexSelect}, {{{6, 4}, -50.0f, 50.0f}},
                   [](const Inputs& x) {
                     MoeRouteParams p;
                     p.k = 2;
                     p.config_top_k = 2;
                     p.capacity_factor = 1.0;
                     const Device d = x[0].device();
                     const Tensor mask = Tensor::from_vector({1, 1, 1, 1, 1, 0}, {6}, d);
                     const MoeRoute r = ops::moe_route(x[0].detach(), Tensor::zeros({4}, DType::F32, d), mask, p);
                     const Tensor w = ops::mul(ops::index_select(ops::reshape(x[0], {-1}), 0, r.flat), r.chosen);
                     return ops::cat({w, r.expert.to(DType::F32), ops::slice(r.stats, 0, 0, 10)}, 0);
                   },
                   [](const std::vector<Values>& x) {
                     const int64_t N = 6, E = 4, cap = 3;  // ⌈1.0 · 5 real tokens · 2 / 4⌉
                     Values w(12), ex(12), stats(10, 0.0f);
                     std::vector<int64_t> fill(E, 0);
                     std::vector<std::vector<int64_t>> order(N);
                     for (int64_t n = 0; n < N; ++n) {
                       order[n] = {0, 1, 2, 3};
                       std::stable_sort(order[n].begin(), order[n].end(), [&](int64_t a, int64_t b) { return x[0][n * E + a] > x[0][n * E + b]; });
                     }
                     for (int64_t j = 0; j < 2; ++j)
                       for (int64_t n = 0; n < N; ++n) {
                         const int64_t s = j * N + n, e = order[n][j];
                         w[s] = x[0][n * E + e];
                         const bool kept = fill[e] < cap;
                         if (kept) ++fill[e];
                         ex[s] = kept ? static_cast<float>(e) : -1.0f;
                         if (n < 5) {
                           stats[E + e] += 1;
                           stats[9] += 1;
                           if (kept) stats[e] += 1, stats[8] += 1;
                         }
                       }
                     Values y = w;
                     y.insert(y.end(), ex.begin(), ex.end());
                     y.insert(y.end(), stats.begin(), stats.end());
                     return y;
                   }});
  cases.push_back({"top-k indices, then the chosen scores", {OpKind::TopK, OpKind::Gather}, {{{6, 5}}},
                   [](const Inputs& x) { return ops::gather(x[0], 1, ops::topk_indices(x[0], 2)); },
                   [](const std::vector<Values>& x) {
                     Values y;
                     for (int64_t n = 0; n < 6; ++n) {
                       Values row(x[0].begin() + n * 5, x[0].begin() + n * 5 + 5);
                       std::sort(row.begin(), row.end(), std::greater<float>());
                       y.push_back(row[0]);
                       y.push_back(row[1]);
                     }
                     return y;
                   }});
  // Losses: an ignored row, a zero-weight row, weights; the linear one in chunks of 2 rows.
  auto ce_ref = [](const Values& logits, int64_t V, const std::vector<int64_t>& t, const Values& w) {
    double total = 0, wsum = 0;
    for (size_t i = 0; i < t.size(); ++i) {
      if (t[i] == -100 || w[i] == 0) continue;
      double m = -1e300, z = 0;
      for (int64_t j = 0; j < V; ++j) m = std::max<double>(m, logits[i * V + j]);
      for (int64_t j = 0; j < V; ++j) z += std::exp(logits[i * V + j] - m);
      total += w[i] * (m + std::log(z) - logits[i * V + t[i]]);
      wsum += w[i];
    }
    return Values{static_cast<float>(total / wsum)};
  };
  cases.push_back({"cross_entropy with ignored and weighted rows", {OpKind::CrossEntropy, OpKind::CrossEntropyBackward},
                   {{{5, 37}, -3.0f, 3.0f}},
                   [](const Inputs& x) {
                     const Tensor t = Tensor::from_ints({3, -100, 36, 0, 5}, {5}, DType::I64, x[0].device());
                     return ops::cross_entropy(x[0], t, -100, Tensor::from_vector({0.5f, 1.0f, 0.0f, 2.0f, 1.5f}, {5}, x[0].device()));
                   },
                   [ce_ref](const std::vector<Values>& x) { return ce_ref(x[0], 37, {3, -100, 36, 0, 5}, {0.5f, 1.0f, 0.0f, 2.0f, 1.5f}); },
                   37 * 5});
  cases.push_back({"linear_cross_entropy in chunks", {OpKind::LinearCrossEntropy}, {{{5, 8}}, {{37, 8}}},
                   [](const Inputs& x) {
                     const Tensor t = Tensor::from_ints({3, -100, 36, 0, 5}, {5}, DType::I32, x[0].device());
                     return ops::linear_cross_entropy(x[0], x[1], t, -100, Tensor(), 2);
                   },
                   [ce_ref](const std::vector<Values>& x) {
                     Values logits(5 * 37, 0.0f);
                     for (int64_t i = 0; i < 5; ++i)
                       for (int64_t v = 0; v < 37; ++v)
                         for (int64_t c = 0; c < 8; ++c) logits[i * 37 + v] += x[0][i * 8 + c] * x[1][v * 8 + c];
                     return ce_ref(logits, 37, {3, -100, 36, 0, 5}, Values(5, 1.0f));
                   },
                   37 * 8});
  // Optimizer steps over two tensors (one longer than a 16K piece): the gradient norm clipped to
  // 1, then AdamW (or SGD with momentum) with the clip applied as the gradients are read.
  for (bool adam : {true, false})
    cases.push_back({adam ? "grad_norm, clip and AdamW over two tensors" : "grad_norm, clip and SGD over two tensors",
                     {OpKind::GradNorm, OpKind::AdamW, OpKind::Sgd, OpKind::ScaleGrads},
                     {{{7, 3}}, {{20000}}, {{7, 3}}, {{20000}}},
                     [adam](const Inputs& x) {
                       NoGradGuard no_grad;
                       const std::vector<Tensor> p = {x[0].detach().clone(), x[1].detach().clone()}, g = {x[2].detach(), x[3].detach()};
                       const Tensor clip = ops::grad_norm(g, 1.0f);
                       std::vector<Tensor> m = {ops::mul(g[0], 0.1f), ops::mul(g[1], 0.1f)}, v = {ops::mul(g[0], g[0]), ops::mul(g[1], g[1])};
                       if (adam) ops::adamw_step(p, g, m, v, AdamWStep{0.99f, 0.9f, 0.999f, 0.01f, 1.2f, 1e-8f}, clip);
                       else ops::sgd_step(p, g, m, SgdStep{0.01f, 0.9f, 0.1f, true, false}, clip);
                       const std::vector<Tensor> g2 = {g[0].clone(), g[1].clone()};
                       ops::scale_grads(g2, clip);
                       return ops::cat({ops::reshape(p[0], {-1}), p[1], ops::reshape(m[0], {-1}), m[1], clip, ops::reshape(g2[0], {-1})}, 0);
                     },
                     [adam](const std::vector<Values>& x) {
                       double ss = 0;
                       for (int i : {2, 3})
                         for (float v : x[i]) ss += static_cast<double>(v) * v;
                       const float norm = static_cast<float>(std::sqrt(ss)), f = norm > 1.0f ? 1.0f / (norm + 1e-6f) : 1.0f;
                       Values p0, p1, m0, m1;
                       for (int t = 0; t < 2; ++t) {
                         Values& p = t ? p1 : p0;
                         Values& m = t ? m1 : m0;
                         p = x[t];
                         for (size_t i = 0; i < p.size(); ++i) {
                           const float g = x[2 + t][i] * f, g0 = x[2 + t][i];
                           float mi = 0.1f * g0, vi = g0 * g0;
                           if (adam) {
                             mi = 0.9f * mi + 0.1f * g;
                             vi = 0.999f * vi + 0.001f * g * g;
                             p[i] = p[i] * 0.99f - 0.01f * mi / (std::sqrt(vi) * 1.2f + 1e-8f);
                           } else {
                             const float d = g + 0.1f * p[i];
                             mi = 0.9f * mi + d;
                             p[i] -= 0.01f * (d + 0.9f * mi);
                           }
                           m.push_back(mi);
                         }
                       }
                       Values y = p0;
                       y.insert(y.end(), p1.begin(), p1.end());
                       y.insert(y.end(), m0.begin(), m0.end());
                       y.insert(y.end(), m1.begin(), m1.end());
                       y.insert(y.end(), {norm, f, 0.0f});
                       for (float g : x[2]) y.push_back(g * f);
                       return y;
                     },
                     20021, false});
  // bf16 weights (inference): a fixed bf16 matrix and table, the gradient flowing to x only.
  auto bf16_weight = [](const Shape& shape, Device d) {
    Philox rng(77);
    return Tensor::uniform(shape, rng, -1.0f, 1.0f).to(DType::BF16).to(d);
  };
  auto bf16_values = [](const Shape& shape) {
    Philox rng(77);
    return Tensor::uniform(shape, rng, -1.0f, 1.0f).to(DType::BF16).to_vector();
  };
  // Three rows: decoding's dot path, where a bf16 weight meets f32 activations (with more rows the
  // packed path rounds the activations to bf16 too, a piecewise-constant forward that finite
  // differences cannot check; Bf16Weights.* and Kernels.GemmBf16* cover it).
  OpCase bf16_linear{"linear with a bf16 weight", {OpKind::Matmul}, {{{3, 33}}},
                     [bf16_weight](const Inputs& x) { return ops::linear(x[0], bf16_weight({9, 33}, x[0].device())); },
                     [bf16_values](const std::vector<Values>& x) {
                       const Values w = bf16_values({9, 33});
                       Values y(3 * 9, 0.0f);
                       for (int64_t r = 0; r < 3; ++r)
                         for (int64_t j = 0; j < 9; ++j)
                           for (int64_t k = 0; k < 33; ++k) y[r * 9 + j] += x[0][r * 33 + k] * w[j * 33 + k];
                       return y;
                     },
                     33};
  bf16_linear.dtype = DType::BF16;
  cases.push_back(bf16_linear);
  OpCase bf16_embedding{"embedding from a bf16 table", {OpKind::IndexSelect}, {{{1}}},
                        [bf16_weight](const Inputs& x) {
                          const Tensor ids = Tensor::from_ints({3, 0, 3}, {3}, DType::I64, x[0].device());
                          return ops::mul(ops::embedding(bf16_weight({4, 6}, x[0].device()), ids), x[0]);  // × x: a gradient to check
                        },
                        [bf16_values](const std::vector<Values>& x) {
                          const Values w = bf16_values({4, 6});
                          Values y;
                          for (int64_t id : {3, 0, 3})
                            for (int64_t c = 0; c < 6; ++c) y.push_back(w[id * 6 + c] * x[0][0]);
                          return y;
                        },
                        18};
  bf16_embedding.dtype = DType::BF16;
  cases.push_back(bf16_embedding);
  OpCase bf16_head{"linear_cross_entropy with a bf16 head", {OpKind::LinearCrossEntropy}, {{{4, 8}}},
                   [bf16_weight](const Inputs& x) {
                     const Tensor t = Tensor::from_ints({3, 0, 36, -100}, {4}, DType::I64, x[0].device());
                     return ops::linear_cross_entropy(x[0], bf16_weight({37, 8}, x[0].device()), t, -100, Tensor(), 3);
                   },
                   [bf16_values, ce_ref](const std::vector<Values>& x) {
                     const Values w = bf16_values({37, 8});
                     Values logits(4 * 37, 0.0f);
                     for (int64_t i = 0; i < 4; ++i)
                       for (int64_t v = 0; v < 37; ++v)
                         for (int64_t c = 0; c < 8; ++c) logits[i * 37 + v] += x[0][i * 8 + c] * w[v * 8 + c];
                     return ce_ref(logits, 37, {3, 0, 36, -100}, Values(4, 1.0f));
                   },
                   37 * 8};
  bf16_head.dtype = DType::BF16;
  cases.push_back(bf16_head);
  OpCase bf16_experts{"moe_ffn with bf16 experts", {OpKind::MoeExperts, OpKind::MoeExpertsBackward}, {{{3, 6}}, {{4}, 0.2f, 1.0f}},
                      [bf16_weight](const Inputs& x) {
                        const Device d = x[0].device();
                        return ops::moe_ffn(x[0], bf16_weight({2, 5, 6}, d), bf16_weight({2, 5, 6}, d), bf16_weight({2, 6, 5}, d),
                                            Tensor::from_ints({0, 1, 2, 0}, {4}, DType::I64, d), Tensor::from_ints({1, 0, 1, 0}, {4}, DType::I64, d),
                                            x[1]);
                      },
                      [bf16_values](const std::vector<Values>& x) {
                        // The three matrices are the same draw (one seed), as bf16_weight makes them.
                        const Values g = bf16_values({2, 5, 6}), dn = bf16_values({2, 6, 5});
                        const int64_t tok[4] = {0, 1, 2, 0}, ex[4] = {1, 0, 1, 0};
                        Values y(18, 0.0f);
                        for (int64_t s = 0; s < 4; ++s) {
                          double act[5];
                          for (int64_t f = 0; f < 5; ++f) {
                            double h = 0;
                            for (int64_t c = 0; c < 6; ++c) h += g[(ex[s] * 5 + f) * 6 + c] * x[0][tok[s] * 6 + c];
                            act[f] = h / (1 + std::exp(-h)) * h;  // gate and up are the same matrix here
                          }
                          for (int64_t c = 0; c < 6; ++c) {
                            double o = 0;
                            for (int64_t f = 0; f < 5; ++f) o += dn[(ex[s] * 6 + c) * 5 + f] * act[f];
                            y[tok[s] * 6 + c] += static_cast<float>(x[1][s] * o);
                          }
                        }
                        return y;
                      },
                      30};
  bf16_experts.dtype = DType::BF16;
  cases.push_back(bf16_experts);
  // Philox fills on the device give the host's numbers, and leave the stream where the host would.
  cases.push_back({"Philox normal and uniform fills", {OpKind::RandomFill}, {{{1}}},
                   [](const Inputs& x) {
                     Philox rng(42, 5);
                     const Tensor a = ops::randn({3, 7}, rng, 0.5f, 2.0f, x[0].device());
                     const Tensor b = ops::uniform({5}, rng, -1.0f, 3.0f, x[0].device());
                     const Tensor c = ops::randn({2}, rng, 0.0f, 1.0f, x[0].device());  // after the stream advanced
                     return ops::cat({ops::reshape(a, {-1}), b, c}, 0);
                   },
                   [](const std::vector<Values>&) {
                     Philox rng(42, 5);
                     Values y = Tensor::randn({3, 7}, rng, 0.5f, 2.0f).to_vector();
                     for (float v : Tensor::uniform({5}, rng, -1.0f, 3.0f).to_vector()) y.push_back(v);
                     for (float v : Tensor::randn({2}, rng, 0.0f, 1.0f).to_vector()) y.push_back(v);
                     return y;
                   },
                   1, false});
  // Indices are fixed constants (inputs are the floats only): repeated rows test the deterministic sums.
  cases.push_back({"index_select with repeats (embedding rows)", {OpKind::IndexSelect, OpKind::IndexAdd}, {{{6, 9}}},
                   [](const Inputs& x) { return ops::embedding(x[0], Tensor::from_ints({4, 0, 4, 5, 1}, {5}, DType::I32, x[0].device())); },
                   [](const std::vector<Values>& x) {
                     Values y;
                     for (int64_t id : {4, 0, 4, 5, 1})
                       for (int64_t c = 0; c < 9; ++c) y.push_back(x[0][id * 9 + c]);
                     return y;
                   }});
  cases.push_back({"index_select along a middle axis", {OpKind::IndexSelect, OpKind::IndexAdd}, {{{2, 5, 3}}},
                   [](const Inputs& x) { return ops::index_select(x[0], 1, Tensor::from_ints({2, 2, 0}, {3}, DType::I64, x[0].device())); },
                   [](const std::vector<Values>& x) {
                     Values y;
                     for (int64_t a = 0; a < 2; ++a)
                       for (int64_t j : {2, 2, 0})
                         for (int64_t c = 0; c < 3; ++c) y.push_back(x[0][(a * 5 + j) * 3 + c]);
                     return y;
                   }});
  cases.push_back({"gather and scatter_add", {OpKind::Gather, OpKind::ScatterAdd}, {{{3, 4}}, {{3, 4}}, {{3, 2}}},
                   [](const Inputs& x) {
                     const Tensor idx = Tensor::from_ints({3, 0, 1, 1, 0, 2}, {3, 2}, DType::I64, x[0].device());
                     return ops::cat({ops::gather(x[0], 1, idx), ops::scatter_add(x[1], 1, idx, x[2])}, 1);
                   },
                   [](const std::vector<Values>& x) {
                     const int64_t idx[3][2] = {{3, 0}, {1, 1}, {0, 2}};
                     Values y;
                     for (int64_t r = 0; r < 3; ++r) {
                       for (int64_t j = 0; j < 2; ++j) y.push_back(x[0][r * 4 + idx[r][j]]);
                       Values row(x[1].begin() + r * 4, x[1].begin() + r * 4 + 4);
                       for (int64_t j = 0; j < 2; ++j) row[idx[r][j]] += x[2][r * 2 + j];
                       y.insert(y.end(), row.begin(), row.end());
                     }
                     return y;
                   }});
  cases.push_back({"rms_norm", {OpKind::RmsNorm, OpKind::RmsNormBackward}, {{{3, 5, 129}}, {{129}, 0.5f, 1.5f}},
                   [](const Inputs& x) { return ops::rms_norm(x[0], x[1], 1e-5f); },
                   [](const std::vector<Values>& x) { return rms_norm_ref(x[0], nullptr, x[1], 129, 1e-5f); },
                   129 * 15});
  cases.push_back({"add_rms_norm (both outputs)", {OpKind::RmsNorm, OpKind::RmsNormBackward}, {{{7, 33}}, {{7, 33}}, {{33}, 0.5f, 1.5f}},
                   [](const Inputs& x) {
                     ops::ResidualNorm r = ops::add_rms_norm(x[0], x[1], x[2], 1e-5f);
                     return ops::cat({r.sum, r.normed}, 1);
                   },
                   [](const std::vector<Values>& x) {
                     Values n = rms_norm_ref(x[0], &x[1], x[2], 33, 1e-5f), y;
                     for (int64_t r = 0; r < 7; ++r) {
                       for (int64_t i = 0; i < 33; ++i) y.push_back(x[0][r * 33 + i] + x[1][r * 33 + i]);
                       for (int64_t i = 0; i < 33; ++i) y.push_back(n[r * 33 + i]);
                     }
                     return y;
                   },
                   33 * 7});
  cases.push_back({"rope at an offset", {OpKind::Rope}, {{{2, 5, 3, 8}}},
                   [](const Inputs& x) { return ops::rope(x[0], 10000.0f, 3, 2.0f); },
                   [](const std::vector<Values>& x) {
                     Values y(x[0].size());
                     for (int64_t bt = 0; bt < 10; ++bt)
                       for (int64_t h = 0; h < 3; ++h)
                         for (int64_t i = 0; i < 4; ++i) {
                           const double angle = (3.0 + bt % 5) / 2.0 * std::pow(10000.0, -2.0 * i / 8.0);
                           const float* v = x[0].data() + (bt * 3 + h) * 8;
                           float* o = y.data() + (bt * 3 + h) * 8;
                           o[i] = static_cast<float>(v[i] * std::cos(angle) - v[i + 4] * std::sin(angle));
                           o[i + 4] = static_cast<float>(v[i + 4] * std::cos(angle) + v[i] * std::sin(angle));
                         }
                     return y;
                   }});
  for (bool log : {false, true})
    cases.push_back({log ? "log_softmax of a strided slice" : "softmax of a strided slice", {OpKind::Softmax, OpKind::SoftmaxBackward},
                     {{{5, 258}, -4.0f, 4.0f}},
                     [log](const Inputs& x) {
                       const Tensor v = ops::slice(x[0], 1, 0, 258, 2);
                       return log ? ops::log_softmax(v) : ops::softmax(v);
                     },
                     [log](const std::vector<Values>& x) {
                       Values v;
                       for (int64_t i = 0; i < 5 * 258; i += 2) v.push_back(x[0][i]);
                       return softmax_ref(v, 129, log);
                     },
                     129});
  return cases;
}

// |a − b| ≤ tol · (|b| + 1), tol = factor · ε(f32) · √(reduction length): rounding errors of a
// sum of n terms grow like √n·ε for random signs; the factor 64 leaves room for the different
// orders and fused operations of another backend's kernels.
void expect_close(const Values& got, const Values& want, int64_t reduction_length, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const double tol = 64 * std::numeric_limits<float>::epsilon() * std::sqrt(static_cast<double>(std::max<int64_t>(reduction_length, 1)));
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_LE(std::fabs(got[i] - want[i]), tol * (std::fabs(want[i]) + 1.0)) << what << " element " << i << ": " << got[i] << " vs " << want[i];
}

std::vector<Device> other_devices() {
  std::vector<Device> d{testing::sim_device()};
  if (has_device_backend(DeviceType::CUDA)) d.push_back(Device::cuda(0));
  return d;
}

TEST(BackendOps, EveryOpKindHasACase) {
  std::set<int> covered;
  for (const OpCase& c : all_cases())
    for (OpKind k : c.covers) covered.insert(static_cast<int>(k));
  for (int k = 0; k < static_cast<int>(OpKind::Count); ++k)
    EXPECT_TRUE(covered.count(k)) << "no backend-ops case runs '" << op_kind_name(static_cast<OpKind>(k)) << "'";
}

TEST(BackendOps, CpuAgainstScalarReferencesAndFiniteDifferences) {
  for (const OpCase& c : all_cases()) {
    SCOPED_TRACE(c.name);
    const Inputs in = make_inputs(c, Device::cpu());
    std::vector<Values> host;
    for (const Tensor& t : in) host.push_back(t.to_vector());
    expect_close(c.fn(in).to_vector(), c.reference(host), c.reduction_length, c.name + " forward");
    if (!c.differentiable) continue;
    const GradcheckResult g = gradcheck(c.fn, in);
    EXPECT_TRUE(g.ok) << c.name << " backward: " << g.first_failure;
  }
}

TEST(BackendOps, EveryBackendAgainstTheCpu) {
  for (Device device : other_devices()) {
    std::vector<std::string> lacking;
    for (const OpCase& c : all_cases()) {
      SCOPED_TRACE(device.str() + ": " + c.name);
      bool supported = true;
      for (OpKind k : c.covers) supported = supported && device_supports(device, k, c.dtype);
      if (!supported) {
        lacking.push_back(c.name);
        continue;
      }
      const std::vector<Values> want = run_case(c, Device::cpu()), got = run_case(c, device);
      expect_close(got[0], want[0], c.reduction_length, "forward");
      for (size_t i = 1; i < want.size(); ++i) expect_close(got[i], want[i], c.reduction_length, "gradient of input " + std::to_string(i - 1));
    }
    // Reported, not silently skipped; the sim device runs the CPU's table, so it lacks nothing.
    for (const std::string& name : lacking) std::printf("[ backend %s lacks ] %s\n", device.str().c_str(), name.c_str());
    if (device.type == DeviceType::Sim) EXPECT_TRUE(lacking.empty());
  }
}

TEST(BackendOps, Cuda) {
  if (!has_device_backend(DeviceType::CUDA)) GTEST_SKIP() << "no CUDA GPU here (or a build without CUDA): CUDA ops not compared with the CPU";
  // With a GPU, EveryBackendAgainstTheCpu compares CUDA's results; here: it must lack no op.
  for (int k = 0; k < static_cast<int>(OpKind::Count); ++k)
    EXPECT_TRUE(device_supports(Device::cuda(0), static_cast<OpKind>(k), DType::F32))
        << "the CUDA op table lacks '" << op_kind_name(static_cast<OpKind>(k)) << "'";
}

}  // namespace
}  // namespace smelt
