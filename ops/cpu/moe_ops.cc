// The CPU's MoE dispatch. Permute: counting-sort the slots by expert (dropped slots, expert −1,
// go last and are never run), and list each token's slots. Experts: each expert's SwiGLU runs as
// GEMMs over its segment (the GEMMs read the token rows through the sorted index, no gathered
// copy), all experts' products as one grouped call; then combine per token, its slots' outputs
// scaled by their routing weights. The backward retraces the same segments. Top-k: per row.
#include <algorithm>
#include <cmath>
#include <limits>
#include <cstring>
#include <numeric>
#include <vector>

#include "ops/cpu/cpu_ops.h"
#include "ops/precision.h"
#include "runtime/thread_pool.h"

namespace smelt {
namespace {

const float* f32(const Tensor& t) { return static_cast<const float*>(t.device_data()); }
float* f32_out(const Tensor& t) { return t.defined() ? static_cast<float*>(t.device_data()) : nullptr; }
const int64_t* i64(const Tensor& t) { return static_cast<const int64_t*>(t.device_data()); }
int64_t* i64_out(const Tensor& t) { return static_cast<int64_t*>(t.device_data()); }

int64_t index_at(const Tensor& idx, int64_t i) {
  return idx.dtype() == DType::I64 ? i64(idx)[i] : static_cast<int64_t>(static_cast<const int32_t*>(idx.device_data())[i]);
}

// The dispatch's arrays on the host side of this backend (they are CPU tensors here).
struct DispatchView {
  int64_t N, E, S;
  const int64_t *order, *offsets, *sorted_token, *token_offsets, *token_positions;
  explicit DispatchView(const MoeDispatch& d)
      : N(d.token_offsets.numel() - 1), E(d.offsets.numel() - 1), S(d.order.numel()), order(i64(d.order)), offsets(i64(d.offsets)),
        sorted_token(i64(d.sorted_token)), token_offsets(i64(d.token_offsets)), token_positions(i64(d.token_positions)) {}
  int64_t kept() const { return offsets[E]; }
};

// out[n] = Σ over token n's slots (sorted position i) of scale(i) · rows[i], each output row
// written once by one thread; a token without slots gets zeros. Slots add in sorted order.
// Each slot's scaled row is rounded before it is added (a multiply, then an add; no fused
// multiply-add): the sum is then the one a rank of an expert-parallel run forms when the scaled
// rows of a token's slots come back from the ranks that ran its experts, bit for bit.
template <typename Scale>
void combine_per_token(const DispatchView& d, int64_t C, const float* rows, Scale&& scale, float* out) {
  parallel_for(0, d.N, 16, [&](int64_t lo, int64_t hi) {
    std::vector<float> scaled(static_cast<size_t>(C));
    for (int64_t n = lo; n < hi; ++n) {
      float* dst = out + n * C;
      const int64_t first = d.token_offsets[n], last = d.token_offsets[n + 1];
      if (first == last) {
        std::memset(dst, 0, C * sizeof(float));
        continue;
      }
      const int64_t i0 = d.token_positions[first];
      cpu_binary_scalar(BinaryOp::Mul, rows + i0 * C, scale(i0), dst, C);
      for (int64_t p = first + 1; p < last; ++p) {
        const int64_t i = d.token_positions[p];
        cpu_binary_scalar(BinaryOp::Mul, rows + i * C, scale(i), scaled.data(), C);
        cpu_binary(BinaryOp::Add, dst, scaled.data(), dst, C);
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
    g.bf16_math = matmuls_in_bf16();
    problems.push_back(g);
    return problems.back();
  }
  // The same with B an expert's matrix inside the stacked weight w (f32, bf16 or quantised), from element b_offset.
  GemmArgs& add(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, bool ta, const Tensor& w, int64_t b_offset, int64_t ldb,
                bool tb, float* c, int64_t ldc, float beta) {
    GemmArgs& g = add(m, n, k, a, lda, ta, nullptr, ldb, tb, c, ldc, beta);
    point_gemm_b(g, w, b_offset, tb);
    return g;
  }
  void run() {
    if (!problems.empty()) cpu_grouped_gemm(problems.data(), static_cast<int64_t>(problems.size()));
    problems.clear();
  }
};

}  // namespace

void cpu_topk_op(const Tensor& x, int64_t k, const Tensor& out) {
  const int64_t N = x.size(0), E = x.size(1);
  const float* px = f32(x);
  int64_t* po = i64_out(out);
  parallel_for(0, N, 64, [&](int64_t lo, int64_t hi) {
    std::vector<int64_t> idx(E);
    for (int64_t n = lo; n < hi; ++n) {
      const float* row = px + n * E;
      std::iota(idx.begin(), idx.end(), 0);
      // NaN ranks as −∞: a strict total order, as partial_sort needs.
      auto key = [&](int64_t i) { return std::isnan(row[i]) ? -std::numeric_limits<float>::infinity() : row[i]; };
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                        [&](int64_t a, int64_t b) { return key(a) > key(b) || (key(a) == key(b) && a < b); });
      std::copy(idx.begin(), idx.begin() + k, po + n * k);
    }
  });
}

void cpu_moe_permute_op(const Tensor& token, const Tensor& expert, const MoeDispatch& out) {
  const int64_t S = token.numel(), E = out.offsets.numel() - 1, N = out.token_offsets.numel() - 1;
  int64_t *order = i64_out(out.order), *offsets = i64_out(out.offsets), *sorted_token = i64_out(out.sorted_token);
  int64_t *token_offsets = i64_out(out.token_offsets), *token_positions = i64_out(out.token_positions);
  std::vector<int64_t> tok(S), ex(S);
  std::fill(offsets, offsets + E + 1, 0);
  int64_t dropped = 0;
  for (int64_t s = 0; s < S; ++s) {
    tok[s] = index_at(token, s);
    ex[s] = index_at(expert, s);
    SMELT_CHECK(tok[s] >= 0 && tok[s] < N, "moe_ffn: token index ", tok[s], " out of range [0, ", N, ")");
    SMELT_CHECK(ex[s] >= -1 && ex[s] < E, "moe_ffn: expert index ", ex[s], " out of range [0, ", E, ") (or −1: dropped)");
    if (ex[s] < 0) ++dropped;
    else ++offsets[ex[s] + 1];
  }
  for (int64_t e = 0; e < E; ++e) offsets[e + 1] += offsets[e];
  std::vector<int64_t> fill(offsets, offsets + E);
  int64_t next_dropped = offsets[E];
  for (int64_t s = 0; s < S; ++s) order[ex[s] < 0 ? next_dropped++ : fill[ex[s]]++] = s;  // stable within an expert
  for (int64_t i = 0; i < S; ++i) sorted_token[i] = tok[order[i]];
  // Each token's kept slots, as sorted positions (ascending).
  const int64_t kept = offsets[E];
  std::fill(token_offsets, token_offsets + N + 1, 0);
  for (int64_t i = 0; i < kept; ++i) ++token_offsets[sorted_token[i] + 1];
  for (int64_t n = 0; n < N; ++n) token_offsets[n + 1] += token_offsets[n];
  std::vector<int64_t> next(token_offsets, token_offsets + N);
  for (int64_t i = 0; i < kept; ++i) token_positions[next[sorted_token[i]]++] = i;
  for (int64_t i = kept; i < S; ++i) token_positions[i] = i;  // unused: dropped slots combine nowhere
}

void cpu_moe_experts_op(const Tensor& x, const Tensor& gate, const Tensor& up, const Tensor& down, const Tensor& weight,
                        const MoeDispatch& dispatch, const Tensor& h, const Tensor& u, const Tensor& act, const Tensor& ys, const Tensor& out) {
  const DispatchView d(dispatch);
  const int64_t F = gate.size(1), C = gate.size(2), kept = d.kept();
  const float* px = f32(x);
  float *ph = f32_out(h), *pu = f32_out(u), *pa = f32_out(act), *py = f32_out(ys);
  GemmGroup group;
  for (int64_t e = 0; e < d.E; ++e) {
    const int64_t r0 = d.offsets[e], n = d.offsets[e + 1] - r0;
    if (n == 0) continue;  // an expert without tokens does no work (and keeps a zero gradient)
    group.add(n, F, C, px, C, false, gate, e * F * C, C, true, ph + r0 * F, F, 0.0f).a_rows = d.sorted_token + r0;
    group.add(n, F, C, px, C, false, up, e * F * C, C, true, pu + r0 * F, F, 0.0f).a_rows = d.sorted_token + r0;
  }
  group.run();
  parallel_for(0, kept * F, 1 << 14, [&](int64_t lo, int64_t hi) {
    cpu_unary(UnaryOp::Silu, ph + lo, pa + lo, hi - lo, 0.0f);
    cpu_binary(BinaryOp::Mul, pa + lo, pu + lo, pa + lo, hi - lo);
  });
  for (int64_t e = 0; e < d.E; ++e) {
    const int64_t r0 = d.offsets[e], n = d.offsets[e + 1] - r0;
    if (n == 0) continue;
    group.add(n, C, F, pa + r0 * F, F, false, down, e * C * F, F, true, py + r0 * C, C, 0.0f);
  }
  group.run();
  const float* pw = f32(weight);
  combine_per_token(d, C, py, [&](int64_t i) { return pw[d.order[i]]; }, f32_out(out));
}

void cpu_moe_experts_backward_op(const Tensor& x, const Tensor& gate, const Tensor& up, const Tensor& down, const Tensor& weight,
                                 const MoeDispatch& dispatch, const Tensor& h, const Tensor& u, const Tensor& act, const Tensor& ys,
                                 const Tensor& grad, const Tensor& dx, const Tensor& dgate, const Tensor& dup, const Tensor& ddown,
                                 const Tensor& dweight) {
  const DispatchView d(dispatch);
  const int64_t F = gate.size(1), C = gate.size(2), kept = d.kept();
  const float *pg = f32(grad), *pw = f32(weight), *px = f32(x);
  const float *ph = f32(h), *pu = f32(u), *pa = f32(act), *py = f32(ys);
  // Scratch as CPU tensors: the block cache hands back last step's blocks, unzeroed.
  const Tensor dys = Tensor::empty({kept, C});
  float *pdw = f32_out(dweight), *pdys = f32_out(dys);
  parallel_for(0, d.S, 64, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t s = d.order[i];
      if (i >= kept) {  // a dropped slot: no output, no gradient
        pdw[s] = 0.0f;
        continue;
      }
      const float* g_tok = pg + d.sorted_token[i] * C;
      pdw[s] = cpu_dot(g_tok, py + i * C, C);  // d out / d weight[s] = y[s]
      cpu_binary_scalar(BinaryOp::Mul, g_tok, pw[s], pdys + i * C, C);
    }
  });
  for (const Tensor* t : {&dgate, &dup, &ddown})
    if (t->defined()) std::fill(f32_out(*t), f32_out(*t) + t->numel(), 0.0f);
  const Tensor dact = Tensor::empty({kept, F}), dh = Tensor::empty({kept, F}), du = Tensor::empty({kept, F}), dxs = Tensor::empty({kept, C});
  float *pda = f32_out(dact), *pdh = f32_out(dh), *pdu = f32_out(du), *pdxs = f32_out(dxs);
  GemmGroup group;
  for (int64_t e = 0; e < d.E; ++e) {
    const int64_t r0 = d.offsets[e], n = d.offsets[e + 1] - r0;
    if (n == 0) continue;
    // down: y = act · Wdᵀ  →  dWd = dyᵀ · act,  dact = dy · Wd
    if (ddown.defined()) group.add(C, F, n, pdys + r0 * C, C, true, pa + r0 * F, F, false, f32_out(ddown) + e * C * F, F, 0.0f);
    group.add(n, F, C, pdys + r0 * C, C, false, down, e * C * F, F, false, pda + r0 * F, F, 0.0f);
  }
  group.run();
  parallel_for(0, kept * F, 1 << 14, [&](int64_t lo, int64_t hi) {
    // act = silu(h) ⊙ u  →  du = dact ⊙ silu(h),  dh = dact ⊙ u ⊙ silu'(h)
    cpu_swiglu_backward_rows(ph + lo, pu + lo, pda + lo, pdh + lo, pdu + lo, hi - lo);
  });
  // h = xs · Wgᵀ, u = xs · Wuᵀ  →  dWg = dhᵀ · xs, dWu = duᵀ · xs, dxs = dh · Wg + du · Wu
  // (the du · Wu half adds into dxs, so it runs as a second group after the first has written it)
  GemmGroup second;
  for (int64_t e = 0; e < d.E; ++e) {
    const int64_t r0 = d.offsets[e], n = d.offsets[e + 1] - r0;
    if (n == 0) continue;
    if (dgate.defined())
      group.add(F, C, n, pdh + r0 * F, F, true, px, C, false, f32_out(dgate) + e * F * C, C, 0.0f).b_rows = d.sorted_token + r0;
    if (dup.defined())
      group.add(F, C, n, pdu + r0 * F, F, true, px, C, false, f32_out(dup) + e * F * C, C, 0.0f).b_rows = d.sorted_token + r0;
    group.add(n, C, F, pdh + r0 * F, F, false, gate, e * F * C, C, false, pdxs + r0 * C, C, 0.0f);
    second.add(n, C, F, pdu + r0 * F, F, false, up, e * F * C, C, false, pdxs + r0 * C, C, 1.0f);
  }
  group.run();
  second.run();
  combine_per_token(d, C, pdxs, [](int64_t) { return 1.0f; }, f32_out(dx));
}

}  // namespace smelt
