// Causal (or full) GQA attention, flash-style on every backend: the T×T probability matrix is
// never stored, only each query row's log-sum-exp, which the backward uses to recompute the
// probabilities block by block (ops/cpu/attention_ops.cc has the CPU's blocking).
#include "ops/attention.h"

#include <cmath>

#include "ops/common.h"

namespace smelt::ops {

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, float scale, const Tensor& key_start) {
  check_f32(q, "attention", "q");
  check_f32(k, "attention", "k");
  check_f32(v, "attention", "v");
  check_same_device(q, k, "attention");
  check_same_device(q, v, "attention");
  SMELT_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention: q, k, v must be [batch, seq, heads, head_dim], got ",
              q.str(), ", ", k.str(), ", ", v.str());
  SMELT_CHECK(k.shape() == v.shape(), "attention: k ", k.str(), " and v ", v.str(), " differ");
  SMELT_CHECK(q.size(0) == k.size(0) && q.size(3) == k.size(3), "attention: q ", q.str(), " does not match k ", k.str());
  SMELT_CHECK(k.size(2) > 0 && q.size(2) % k.size(2) == 0, "attention: query heads (", q.size(2),
              ") must be a multiple of kv heads (", k.size(2), ")");
  SMELT_CHECK(!causal || q.size(1) <= k.size(1), "attention: causal with more queries (", q.size(1), ") than keys (", k.size(1), ")");
  const float s = scale > 0 ? scale : 1.0f / std::sqrt(static_cast<float>(q.size(3)));
  Tensor first_key;  // per (b, i): keys before it are masked too (checked by the backend as read)
  if (key_start.defined()) {
    check_index(key_start, "attention", "key_start");
    check_same_device(q, key_start, "attention");
    SMELT_CHECK(causal && key_start.shape() == Shape({q.size(0), q.size(1)}), "attention: key_start ", key_start.str(), " must be [",
                q.size(0), ", ", q.size(1), "] and causal");
    first_key = contiguous_data(key_start.to(DType::I64));
  }
  const OpTable& B = op_table(q.device(), OpKind::Attention, DType::F32);
  Tensor qc = contiguous_data(q), kc = contiguous_data(k), vc = contiguous_data(v);
  Tensor out = Tensor::empty(q.shape(), DType::F32, q.device());
  Tensor lse = Tensor::empty({q.size(0), q.size(2), q.size(1)}, DType::F32, q.device());  // [B, Hq, Tq]
  B.attention(qc, kc, vc, first_key, causal, s, out, lse);
  if (!needs_grad({&q, &k, &v})) return out;
  SavedTensor Q(qc, "attention", is_activation(q)), Ks(kc, "attention", is_activation(k)), V(vc, "attention", is_activation(v));
  attach_grad_fn(out, "attention", {q, k, v}, [=](const Tensor& grad) {
    Tensor gc = contiguous_data(grad), qv = Q.get(), kv = Ks.get(), vv = V.get();
    const Device dev = qv.device();
    Tensor dq = Tensor::empty(qv.shape(), DType::F32, dev), dk = Tensor::empty(kv.shape(), DType::F32, dev),
           dv = Tensor::empty(vv.shape(), DType::F32, dev);
    op_table(dev, OpKind::AttentionBackward, DType::F32).attention_backward(qv, kv, vv, first_key, lse, gc, causal, s, dq, dk, dv);
    return std::vector<Tensor>{dq, dk, dv};
  });
  return out;
}

}  // namespace smelt::ops
