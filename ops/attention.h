// Multi-head scaled dot-product attention with grouped-query heads.
#pragma once
#include "runtime/tensor.h"

namespace smelt::ops {

// q [B, Tq, Hq, D], k and v [B, Tk, Hkv, D] with Hq a multiple of Hkv (query head h reads kv
// head h / (Hq / Hkv)) → [B, Tq, Hq, D]. With `causal`, query i sees keys j ≤ i + (Tk − Tq), so
// Tq < Tk is a decode step against a KV cache. `scale` ≤ 0 means 1/sqrt(D).
// key_start (optional, [B, Tq] integers, causal only): query i also ignores keys before
// key_start[b, i] — packed documents that must not attend across their boundaries.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal = true, float scale = 0.0f,
                 const Tensor& key_start = Tensor());

}  // namespace smelt::ops
