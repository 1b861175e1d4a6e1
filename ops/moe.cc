// The MoE dispatch. Forward: counting-sort the slots by expert, run each expert's SwiGLU as GEMMs
// over its segment (the GEMMs read the token rows through the sorted index, no gathered copy),
// then combine per token: its slots' outputs scaled by their routing weights. Backward retraces
// the same segments.
#include "ops/moe.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>

#include "ops/common.h"
#include "ops/cpu/cpu_ops.h"  // the experts' SwiGLU backward rows, until MoE dispatch is a whole op
#include "runtime/thread_pool.h"

namespace smelt::ops {
namespace {

bool g_timing = false;
MoeTimings g_timings;

// Adds the time since construction (or the last lap) to a phase when timing is on.
class PhaseClock {
 public:
  PhaseClock() : last_(std::chrono::steady_clock::now()) {}
  void lap(double& phase) {
    if (!g_timing) return;
    auto now = std::chrono::steady_clock::now();
    phase += std::chrono::duration<double>(now - last_).count();
    last_ = now;
  }

 private:
  std::chrono::steady_clock::time_point last_;
};

struct Dispatch {
  int64_t N = 0, C = 0, F = 0, E = 0, S = 0;
  std::vector<int64_t> order;         // sorted position i → slot s
  std::vector<int64_t> offsets;       // expert e owns sorted rows [offsets[e], offsets[e+1])
  std::vector<int64_t> token;         // token of slot s
  std::vector<int64_t> sorted_token;  // token of sorted position i: the GEMMs' row index into x
  // Token n's slots, as sorted positions (ascending): token_positions[token_offsets[n] ...
  // token_offsets[n+1]). Combining per token writes each output row once, from one thread.
  std::vector<int64_t> token_offsets, token_positions;
};

Dispatch make_dispatch(const Tensor& token, const Tensor& expert, int64_t N, int64_t E) {
  Dispatch d;
  d.S = token.numel();
  d.N = N;
  d.E = E;
  Tensor tc = contiguous_data(token), ec = contiguous_data(expert);
  d.token.resize(d.S);
  std::vector<int64_t> ex(d.S);
  d.offsets.assign(E + 1, 0);
  for (int64_t s = 0; s < d.S; ++s) {
    d.token[s] = index_at(tc, s);
    ex[s] = index_at(ec, s);
    SMELT_CHECK(d.token[s] >= 0 && d.token[s] < N, "moe_ffn: token index ", d.token[s], " out of range [0, ", N, ")");
    SMELT_CHECK(ex[s] >= 0 && ex[s] < E, "moe_ffn: expert index ", ex[s], " out of range [0, ", E, ")");
    ++d.offsets[ex[s] + 1];
  }
  for (int64_t e = 0; e < E; ++e) d.offsets[e + 1] += d.offsets[e];
  d.order.resize(d.S);
  std::vector<int64_t> fill(d.offsets.begin(), d.offsets.end() - 1);
  for (int64_t s = 0; s < d.S; ++s) d.order[fill[ex[s]]++] = s;  // stable: slot order kept within an expert
  d.sorted_token.resize(d.S);
  for (int64_t i = 0; i < d.S; ++i) d.sorted_token[i] = d.token[d.order[i]];
  d.token_offsets.assign(N + 1, 0);
  for (int64_t i = 0; i < d.S; ++i) ++d.token_offsets[d.sorted_token[i] + 1];
  for (int64_t n = 0; n < N; ++n) d.token_offsets[n + 1] += d.token_offsets[n];
  d.token_positions.resize(d.S);
  std::vector<int64_t> next(d.token_offsets.begin(), d.token_offsets.end() - 1);
  for (int64_t i = 0; i < d.S; ++i) d.token_positions[next[d.sorted_token[i]]++] = i;
  return d;
}

// out[n] = Σ over token n's slots (sorted position i) of scale(i) · rows[i], each output row
// written once by one thread; a token without slots gets zeros. Slots add in sorted order.
template <typename Scale>
void combine_per_token(const KernelTable& K, const Dispatch& d, const float* rows, Scale&& scale, float* out) {
  const int64_t C = d.C;
  parallel_for(0, d.N, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      float* dst = out + n * C;
      const int64_t first = d.token_offsets[n], last = d.token_offsets[n + 1];
      if (first == last) {
        std::memset(dst, 0, C * sizeof(float));
        continue;
      }
      const int64_t i0 = d.token_positions[first];
      K.binary_scalar(BinaryOp::Mul, rows + i0 * C, scale(i0), dst, C);
      for (int64_t p = first + 1; p < last; ++p) {
        const int64_t i = d.token_positions[p];
        K.axpy(scale(i), rows + i * C, dst, C);
      }
    }
  });
}

// C[m, n] (+)= A · op(B) on raw rows, collected into a group that runs as one grouped GEMM.
struct GemmGroup {
  std::vector<GemmArgs> problems;
  GemmArgs& add(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, bool ta, const float* b, int64_t ldb, bool tb, float* c,
                int64_t ldc, float beta) {
    GemmArgs g;
    g.m = m; g.n = n; g.k = k;
    g.a = a; g.lda = lda; g.trans_a = ta;
    g.b = b; g.ldb = ldb; g.trans_b = tb;
    g.c = c; g.ldc = ldc; g.beta = beta;
    problems.push_back(g);
    return problems.back();
  }
  // The same with B an expert's matrix inside the stacked weight w (f32 or bf16), from element b_offset.
  GemmArgs& add(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, bool ta, const Tensor& w, int64_t b_offset, int64_t ldb,
                bool tb, float* c, int64_t ldc, float beta) {
    GemmArgs& g = add(m, n, k, a, lda, ta, nullptr, ldb, tb, c, ldc, beta);
    set_gemm_b(g, w, b_offset);
    return g;
  }
  void run(const KernelTable& K) {
    if (!problems.empty()) K.grouped_gemm(problems.data(), static_cast<int64_t>(problems.size()));
    problems.clear();
  }
};

}  // namespace

void set_moe_timing(bool on) { g_timing = on; }

MoeTimings take_moe_timings() {
  MoeTimings t = g_timings;
  g_timings = MoeTimings();
  return t;
}

Tensor topk_indices(const Tensor& x, int64_t k) {
  check_f32(x, "topk_indices", "x");
  SMELT_CHECK(x.dim() == 2, "topk_indices: x must be [rows, E], got ", x.str());
  const int64_t N = x.size(0), E = x.size(1);
  SMELT_CHECK(k >= 1 && k <= E, "topk_indices: k = ", k, " must be in [1, ", E, "]");
  Tensor xc = contiguous_data(x);
  Tensor out = Tensor::empty({N, k}, DType::I64);
  const float* px = xc.data<float>();
  int64_t* po = out.data<int64_t>();
  parallel_for(0, N, 64, [&](int64_t lo, int64_t hi) {
    std::vector<int64_t> idx(E);
    for (int64_t n = lo; n < hi; ++n) {
      const float* row = px + n * E;
      std::iota(idx.begin(), idx.end(), 0);
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                        [&](int64_t a, int64_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
      std::copy(idx.begin(), idx.begin() + k, po + n * k);
    }
  });
  return out;
}

Tensor moe_ffn(const Tensor& x, const Tensor& gate, const Tensor& up, const Tensor& down, const Tensor& token,
               const Tensor& expert, const Tensor& weight) {
  check_f32(x, "moe_ffn", "x");
  check_weight(gate, "moe_ffn", "gate");
  check_weight(up, "moe_ffn", "up");
  check_weight(down, "moe_ffn", "down");
  check_f32(weight, "moe_ffn", "weight");
  check_index(token, "moe_ffn", "token");
  check_index(expert, "moe_ffn", "expert");
  SMELT_CHECK(x.dim() == 2, "moe_ffn: x must be [tokens, hidden], got ", x.str());
  SMELT_CHECK(gate.dim() == 3 && up.shape() == gate.shape(), "moe_ffn: gate ", gate.str(), " and up ", up.str(),
              " must both be [experts, ffn, hidden]");
  const int64_t E = gate.size(0), F = gate.size(1), C = gate.size(2), N = x.size(0);
  SMELT_CHECK(C == x.size(1), "moe_ffn: expert hidden size ", C, " does not match x ", x.str());
  SMELT_CHECK(down.shape() == Shape({E, C, F}), "moe_ffn: down ", down.str(), " must be [", E, ", ", C, ", ", F, "]");
  SMELT_CHECK(token.numel() == expert.numel() && token.numel() == weight.numel(), "moe_ffn: token ", token.str(), ", expert ",
              expert.str(), " and weight ", weight.str(), " must have one entry per slot");
  const KernelTable& K = kernels_for(x.device());
  PhaseClock clock;
  Dispatch d = make_dispatch(token, expert, N, E);
  d.C = C;
  d.F = F;
  const int64_t S = d.S;
  Tensor xc = contiguous_data(x), gc = contiguous_data(gate), uc = contiguous_data(up), dc = contiguous_data(down);
  Tensor wc = contiguous_data(weight);
  // The activations kept for backward, in sorted-slot order. Token rows are not gathered into a
  // copy: the GEMMs read x through the sorted token index.
  Tensor h = Tensor::empty({S, F}), u = Tensor::empty({S, F}), act = Tensor::empty({S, F});
  Tensor ys = Tensor::empty({S, C});
  const float* px = xc.data<float>();
  float *ph = h.data<float>(), *pu = u.data<float>(), *pa = act.data<float>(), *py = ys.data<float>();
  clock.lap(g_timings.dispatch_seconds);
  GemmGroup group;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t r0 = d.offsets[e], n = d.offsets[e + 1] - r0;
    if (n == 0) continue;  // an expert without tokens does no work (and keeps a zero gradient)
    group.add(n, F, C, px, C, false, gc, e * F * C, C, true, ph + r0 * F, F, 0.0f).a_rows = d.sorted_token.data() + r0;
    group.add(n, F, C, px, C, false, uc, e * F * C, C, true, pu + r0 * F, F, 0.0f).a_rows = d.sorted_token.data() + r0;
  }
  group.run(K);
  parallel_for(0, S * F, 1 << 14, [&](int64_t lo, int64_t hi) {
    K.unary(UnaryOp::Silu, ph + lo, pa + lo, hi - lo, 0.0f);
    K.binary(BinaryOp::Mul, pa + lo, pu + lo, pa + lo, hi - lo);
  });
  for (int64_t e = 0; e < E; ++e) {
    const int64_t r0 = d.offsets[e], n = d.offsets[e + 1] - r0;
    if (n == 0) continue;
    group.add(n, C, F, pa + r0 * F, F, false, dc, e * C * F, F, true, py + r0 * C, C, 0.0f);
  }
  group.run(K);
  clock.lap(g_timings.expert_seconds);
  // Combine: out[token] = Σ weight · y over the token's slots.
  Tensor out = Tensor::empty({N, C});
  const float* pw = wc.data<float>();
  combine_per_token(K, d, py, [&](int64_t i) { return pw[d.order[i]]; }, out.data<float>());
  clock.lap(g_timings.dispatch_seconds);
  if (g_timing) ++g_timings.calls;
  if (!needs_grad({&x, &gate, &up, &down, &weight})) return out;
  // Weight gradients only where asked for: bf16 experts (inference) pass gradients to x without one.
  const bool need_gate = gate.requires_grad(), need_up = up.requires_grad(), need_down = down.requires_grad();

  SavedTensor X(xc, "moe_ffn"), G(gc, "moe_ffn"), U(uc, "moe_ffn"), D(dc, "moe_ffn"), W(wc, "moe_ffn");
  attach_grad_fn(out, "moe_ffn", {x, gate, up, down, weight}, [=](const Tensor& grad) {
    PhaseClock clock;
    Tensor gr = contiguous_data(grad), xv = X.get(), gv = G.get(), uv = U.get(), dv = D.get(), wv = W.get();
    const float *pg = gr.data<float>(), *pw2 = wv.data<float>(), *px2 = xv.data<float>();
    const float *ph2 = h.data<float>(), *pu2 = u.data<float>(), *pa2 = act.data<float>(), *py2 = ys.data<float>();
    Tensor dweight = Tensor::empty({S});
    Tensor dys = Tensor::empty({S, C});
    float *pdw = dweight.data<float>(), *pdys = dys.data<float>();
    parallel_for(0, S, 64, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const int64_t s = d.order[i];
        const float* g_tok = pg + d.token[s] * C;
        pdw[s] = K.dot(g_tok, py2 + i * C, C);  // d out / d weight[s] = y[s]
        K.binary_scalar(BinaryOp::Mul, g_tok, pw2[s], pdys + i * C, C);
      }
    });
    clock.lap(g_timings.backward_dispatch_seconds);
    Tensor dgate = need_gate ? Tensor::zeros({E, F, C}) : Tensor(), dup = need_up ? Tensor::zeros({E, F, C}) : Tensor();
    Tensor ddown = need_down ? Tensor::zeros({E, C, F}) : Tensor();
    Tensor dact = Tensor::empty({S, F}), dh = Tensor::empty({S, F}), du = Tensor::empty({S, F}), dxs = Tensor::empty({S, C});
    float *pda = dact.data<float>(), *pdh = dh.data<float>(), *pdu = du.data<float>(), *pdxs = dxs.data<float>();
    GemmGroup group;
    for (int64_t e = 0; e < E; ++e) {
      const int64_t r0 = d.offsets[e], n = d.offsets[e + 1] - r0;
      if (n == 0) continue;
      // down: y = act · Wdᵀ  →  dWd = dyᵀ · act,  dact = dy · Wd
      if (need_down) group.add(C, F, n, pdys + r0 * C, C, true, pa2 + r0 * F, F, false, ddown.data<float>() + e * C * F, F, 0.0f);
      group.add(n, F, C, pdys + r0 * C, C, false, dv, e * C * F, F, false, pda + r0 * F, F, 0.0f);
    }
    group.run(K);
    parallel_for(0, S * F, 1 << 14, [&](int64_t lo, int64_t hi) {
      // act = silu(h) ⊙ u  →  du = dact ⊙ silu(h),  dh = dact ⊙ u ⊙ silu'(h)
      cpu_swiglu_backward_rows(ph2 + lo, pu2 + lo, pda + lo, pdh + lo, pdu + lo, hi - lo);
    });
    // h = xs · Wgᵀ, u = xs · Wuᵀ  →  dWg = dhᵀ · xs, dWu = duᵀ · xs, dxs = dh · Wg + du · Wu
    // (the du · Wu half adds into dxs, so it runs as a second group after the first has written it)
    GemmGroup second;
    for (int64_t e = 0; e < E; ++e) {
      const int64_t r0 = d.offsets[e], n = d.offsets[e + 1] - r0;
      if (n == 0) continue;
      if (need_gate)
        group.add(F, C, n, pdh + r0 * F, F, true, px2, C, false, dgate.data<float>() + e * F * C, C, 0.0f).b_rows = d.sorted_token.data() + r0;
      if (need_up)
        group.add(F, C, n, pdu + r0 * F, F, true, px2, C, false, dup.data<float>() + e * F * C, C, 0.0f).b_rows = d.sorted_token.data() + r0;
      group.add(n, C, F, pdh + r0 * F, F, false, gv, e * F * C, C, false, pdxs + r0 * C, C, 0.0f);
      second.add(n, C, F, pdu + r0 * F, F, false, uv, e * F * C, C, false, pdxs + r0 * C, C, 1.0f);
    }
    group.run(K);
    second.run(K);
    clock.lap(g_timings.backward_expert_seconds);
    Tensor dx = Tensor::empty({N, C});
    combine_per_token(K, d, pdxs, [](int64_t) { return 1.0f; }, dx.data<float>());
    clock.lap(g_timings.backward_dispatch_seconds);
    return std::vector<Tensor>{dx, dgate, dup, ddown, dweight};
  });
  return out;
}

}  // namespace smelt::ops
