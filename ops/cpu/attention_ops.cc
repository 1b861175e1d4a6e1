// The CPU's attention, flash-style: the T×T probability matrix is never stored. Per (batch,
// head) and block of kQueryBlock query rows: S = scale·QKᵀ over the keys the block can see,
// masked softmax → P, O = PV, all in a per-thread [kQueryBlock × Tk] scratch; only each row's
// log-sum-exp L is kept for backward, so memory is O(T·D) per head, not O(T²). Backward
// recomputes P = exp(S − L) block by block: dP = dO·Vᵀ, dS = P⊙(dP − rowsum(dP⊙P)),
// dQ = scale·dS·K, dK += scale·dSᵀ·Q, dV += Pᵀ·dO. Queries and outputs are read and written in
// place in the [B, T, H, D] layout through GEMM leading dimensions; each head's K and V are
// copied once per head into contiguous per-thread buffers (Kᵀ for the scores), since the many
// small products of its query blocks reread them (see gather_head).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "ops/cpu/cpu_ops.h"
#include "runtime/thread_pool.h"

namespace smelt {
namespace {

const float* f32(const Tensor& t) { return static_cast<const float*>(t.device_data()); }
float* f32_out(const Tensor& t) { return static_cast<float*>(t.device_data()); }

struct Dims {
  int64_t B, Tq, Tk, Hq, Hkv, D, group;
  float scale;
  bool causal;
};

// Row i of the score matrix may see keys [0, visible(i)).
int64_t visible(const Dims& d, int64_t i) { return d.causal ? std::min(d.Tk, i + (d.Tk - d.Tq) + 1) : d.Tk; }

// Causal attention works on blocks of query rows, each against only the keys its last row can
// see: the masked upper triangle is never multiplied (~40 % fewer FLOPs at T = 128).
constexpr int64_t kQueryBlock = 32;

template <typename Fn>
void for_each_query_block(const Dims& d, Fn&& fn) {
  const int64_t step = kQueryBlock;  // also bounds the per-thread score scratch
  for (int64_t i0 = 0; i0 < d.Tq; i0 += step) {
    const int64_t i1 = std::min(d.Tq, i0 + step);
    fn(i0, i1, visible(d, i1 - 1));
  }
}

// Where the scores read a head's keys: a contiguous copy of Kᵀ [D, ld] (with K = D ≤ 64 the
// GEMM's narrow path streams its rows, nothing packed per query block), or K in place, rows ld
// apart (decoding: a query or two does not pay for the copy).
struct Keys {
  const float* p;
  int64_t ld;
  bool transposed_copy;
};

// S[m × kv] = scale · Q_block Kᵀ (packed with row stride kv).
void scores(const Dims& d, const float* q, int64_t qs, const Keys& keys, int64_t m, int64_t kv, float* S) {
  GemmArgs s;
  s.m = m; s.n = kv; s.k = d.D;
  s.a = q; s.lda = qs;
  s.b = keys.p; s.ldb = keys.ld; s.trans_b = !keys.transposed_copy;
  s.c = S; s.ldc = kv; s.alpha = d.scale;
  cpu_gemm(s);
}

// Queries from which a forward copies each head's K and V into contiguous buffers: fewer
// (decoding) read them in place, since the copy would cost as much as the products.
constexpr int64_t kCopyHeadsFromQueries = 8;

// −∞ at the keys query i of batch b may not see: past its causal limit, or before its
// document's first key. Masked keys then get probability 0 in forward and backward alike.
void mask_row(const Dims& d, const int64_t* first_key, int64_t b, int64_t i, int64_t kv, float* row) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t j = visible(d, i); j < kv; ++j) row[j] = kNegInf;
  if (first_key)
    for (int64_t j = 0; j < first_key[b * d.Tq + i]; ++j) row[j] = kNegInf;
}

// Copies the [rows, D] matrix of one head out of the [B, T, H, D] layout (rows `stride` floats
// apart) into `dst`, rows D floats apart. The GEMMs then read K and V of a head from one
// contiguous block: in place, rows H·D floats apart (1 KiB for 8 heads of 32) all map to a few
// L1 sets and evict each other, so each of the many small products reread them from L2.
void gather_head(const float* src, int64_t stride, int64_t rows, int64_t D, float* dst) {
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * D, src + r * stride, D * sizeof(float));
}

// The same head transposed: dst[c * ldt + r] = src[r * stride + c], [D, rows] with rows ldt apart.
void gather_head_transposed(const float* src, int64_t stride, int64_t rows, int64_t D, float* dst, int64_t ldt) {
  // Eight source rows at a time: their lines stay in L1 while each column's eight values are
  // written side by side.
  for (int64_t r0 = 0; r0 < rows; r0 += 8) {
    const int64_t n = std::min<int64_t>(8, rows - r0);
    for (int64_t c = 0; c < D; ++c) {
      float* out = dst + c * ldt + r0;
      for (int64_t r = 0; r < n; ++r) out[r] = src[(r0 + r) * stride + c];
    }
  }
}

// Row length of a transposed head: a multiple of 8 floats (the narrow GEMM path wants whole
// vectors), plus 16 so that rows do not all fall in the same L1 sets when Tk is a power of two.
int64_t transposed_stride(int64_t Tk) { return (Tk + 7) / 8 * 8 + 16; }

// The inverse: dst (rows `stride` apart) = src (rows D apart).
void scatter_head(const float* src, int64_t rows, int64_t D, float* dst, int64_t stride) {
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * stride, src + r * D, D * sizeof(float));
}

Dims dims_of(const Tensor& q, const Tensor& k, bool causal, float scale) {
  return Dims{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3), q.size(2) / k.size(2), scale, causal};
}

// Each query's first visible key (packed documents), checked as read: i64 [B, Tq], or null.
const int64_t* first_keys(const Dims& d, const Tensor& key_start) {
  if (!key_start.defined()) return nullptr;
  const int64_t* first_key = static_cast<const int64_t*>(key_start.device_data());
  for (int64_t bi = 0; bi < d.B * d.Tq; ++bi)
    SMELT_CHECK(first_key[bi] >= 0 && first_key[bi] < visible(d, bi % d.Tq), "attention: key_start ", first_key[bi], " at query ",
                bi % d.Tq, " leaves no key to attend to");
  return first_key;
}

}  // namespace

void cpu_attention_op(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_start, bool causal, float scale,
                      const Tensor& out, const Tensor& lse) {
  const Dims d = dims_of(q, k, causal, scale);
  const int64_t* first_key = first_keys(d, key_start);
  const float *pq = f32(q), *pk = f32(k), *pv = f32(v);
  float *po = f32_out(out), *pl = f32_out(lse);
  const int64_t qs = d.Hq * d.D, ks = d.Hkv * d.D;  // row strides in the [B, T, H, D] layout
  // Decoding (a query or two per head) gives each head its own task, claimed one at a time: the
  // heads are few (9 for SmolLM2) and parallel_for's chunks of two would leave a thread idle.
  const bool copy = d.Tq >= kCopyHeadsFromQueries;
  auto heads = [&](int64_t lo, int64_t hi) {
    // Scratch for one query block's scores (only Tq rows when decoding); written before read.
    std::unique_ptr<float[]> P(new float[static_cast<size_t>(std::min(kQueryBlock, d.Tq) * d.Tk)]);
    const int64_t ldt = transposed_stride(d.Tk);
    std::vector<float> KTh(copy ? static_cast<size_t>(d.D * ldt) : 0), Vh(copy ? static_cast<size_t>(d.Tk * d.D) : 0);
    int64_t copied = -1;  // the (batch, kv head) now in KTh, Vh: consecutive query heads of a group share it
    for (int64_t bh = lo; bh < hi; ++bh) {
      const int64_t b = bh / d.Hq, h = bh % d.Hq, g = h / d.group;
      const float* qh = pq + b * d.Tq * qs + h * d.D;
      const float *kh = pk + b * d.Tk * ks + g * d.D, *vh = pv + b * d.Tk * ks + g * d.D;
      Keys keys{kh, ks, false};
      int64_t v_ld = ks;
      if (copy) {  // this head's Kᵀ and V, contiguous (see gather_head)
        if (copied != b * d.Hkv + g) {
          gather_head_transposed(kh, ks, d.Tk, d.D, KTh.data(), ldt);
          gather_head(vh, ks, d.Tk, d.D, Vh.data());
          copied = b * d.Hkv + g;
        }
        keys = {KTh.data(), ldt, true};
        vh = Vh.data();
        v_ld = d.D;
      }
      for_each_query_block(d, [&](int64_t i0, int64_t i1, int64_t kv) {
        scores(d, qh + i0 * qs, qs, keys, i1 - i0, kv, P.get());
        for (int64_t i = i0; i < i1; ++i) {
          float* row = P.get() + (i - i0) * kv;
          mask_row(d, first_key, b, i, kv, row);
          cpu_softmax(row, row, 1, kv, false, pl + bh * d.Tq + i);
        }
        GemmArgs o;  // O = P V
        o.m = i1 - i0; o.n = d.D; o.k = kv;
        o.a = P.get(); o.lda = kv;
        o.b = vh; o.ldb = v_ld;
        o.c = po + (b * d.Tq + i0) * qs + h * d.D; o.ldc = qs;
        cpu_gemm(o);
      });
    }
  };
  if (copy) parallel_for(0, d.B * d.Hq, 1, heads);  // consecutive heads of a chunk share their K, V copy
  else parallel_tasks(d.B * d.Hq, [&](int64_t bh) { heads(bh, bh + 1); });
}

void cpu_attention_backward_op(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_start, const Tensor& lse,
                               const Tensor& grad, bool causal, float scale, const Tensor& dq, const Tensor& dk, const Tensor& dv) {
  const Dims d = dims_of(q, k, causal, scale);
  const int64_t* first_key = first_keys(d, key_start);
  const int64_t qs = d.Hq * d.D, ks = d.Hkv * d.D;  // row strides in the [B, T, H, D] layout
  const float *pg = f32(grad), *pq2 = f32(q), *pk2 = f32(k), *pv2 = f32(v);
  const float* pl2 = f32(lse);
  float *pdq = f32_out(dq), *pdk = f32_out(dk), *pdv = f32_out(dv);
  // One task per (batch, kv head): the query heads of a group add into the same dK, dV.
  parallel_for(0, d.B * d.Hkv, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> P(static_cast<size_t>(kQueryBlock * d.Tk)), dS(static_cast<size_t>(kQueryBlock * d.Tk));
    // This kv head's K, V and the dK, dV being summed, contiguous (see gather_head).
    const size_t head = static_cast<size_t>(d.Tk * d.D);
    const int64_t ldt = transposed_stride(d.Tk);
    std::vector<float> Kh(head), KTh(static_cast<size_t>(d.D * ldt)), VTh(static_cast<size_t>(d.D * ldt)), dKh(head), dVh(head);
    const float *kh = Kh.data(), *kth = KTh.data(), *vth = VTh.data();
    float *dkh = dKh.data(), *dvh = dVh.data();
    for (int64_t bg = lo; bg < hi; ++bg) {
      const int64_t b = bg / d.Hkv, g = bg % d.Hkv, at = b * d.Tk * ks + g * d.D;
      gather_head(pk2 + at, ks, d.Tk, d.D, Kh.data());
      gather_head_transposed(pk2 + at, ks, d.Tk, d.D, KTh.data(), ldt);
      gather_head_transposed(pv2 + at, ks, d.Tk, d.D, VTh.data(), ldt);
      std::fill(dKh.begin(), dKh.end(), 0.0f);
      std::fill(dVh.begin(), dVh.end(), 0.0f);
      for (int64_t h = g * d.group; h < (g + 1) * d.group; ++h) {
        const float* L = pl2 + (b * d.Hq + h) * d.Tq;
        const float* dO = pg + b * d.Tq * qs + h * d.D;
        const float* qh = pq2 + b * d.Tq * qs + h * d.D;
        for_each_query_block(d, [&](int64_t i0, int64_t i1, int64_t kv) {
          const int64_t m = i1 - i0;
          float* dSb = dS.data();
          scores(d, qh + i0 * qs, qs, Keys{kth, ldt, true}, m, kv, P.data());  // recompute P = exp(S − L)
          for (int64_t i = i0; i < i1; ++i) {
            float* row = P.data() + (i - i0) * kv;
            mask_row(d, first_key, b, i, kv, row);
            cpu_binary_scalar(BinaryOp::Sub, row, L[i], row, kv);
            cpu_unary(UnaryOp::Exp, row, row, kv, 0.0f);  // exp(−∞) = 0 at masked keys
          }
          GemmArgs a;  // dP = dO Vᵀ
          a.m = m; a.n = kv; a.k = d.D;
          a.a = dO + i0 * qs; a.lda = qs;
          a.b = vth; a.ldb = ldt;
          a.c = dSb; a.ldc = kv;
          cpu_gemm(a);
          for (int64_t i = i0; i < i1; ++i) {  // dS = P ⊙ (dP − rowsum(dP ⊙ P))
            float* row = dS.data() + (i - i0) * kv;
            const float* prow = P.data() + (i - i0) * kv;
            cpu_binary_scalar(BinaryOp::Sub, row, cpu_dot(row, prow, kv), row, kv);
            cpu_binary(BinaryOp::Mul, prow, row, row, kv);
          }
          GemmArgs gq;  // dQ = scale · dS K
          gq.m = m; gq.n = d.D; gq.k = kv;
          gq.a = dSb; gq.lda = kv;
          gq.b = kh; gq.ldb = d.D;
          gq.c = pdq + (b * d.Tq + i0) * qs + h * d.D; gq.ldc = qs; gq.alpha = d.scale;
          cpu_gemm(gq);
          GemmArgs gk;  // dK += scale · dSᵀ Q
          gk.m = kv; gk.n = d.D; gk.k = m;
          gk.a = dSb; gk.lda = kv; gk.trans_a = true;
          gk.b = qh + i0 * qs; gk.ldb = qs;
          gk.c = dkh; gk.ldc = d.D; gk.alpha = d.scale; gk.beta = 1.0f;
          cpu_gemm(gk);
          GemmArgs gv;  // dV += Pᵀ dO
          gv.m = kv; gv.n = d.D; gv.k = m;
          gv.a = P.data(); gv.lda = kv; gv.trans_a = true;
          gv.b = dO + i0 * qs; gv.ldb = qs;
          gv.c = dvh; gv.ldc = d.D; gv.beta = 1.0f;
          cpu_gemm(gv);
        });
      }
      scatter_head(dkh, d.Tk, d.D, pdk + at, ks);
      scatter_head(dvh, d.Tk, d.D, pdv + at, ks);
    }
  });
}

}  // namespace smelt
