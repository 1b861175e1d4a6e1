// The CUDA op table's attention, flash-style as ops/cpu/attention_ops.cc: the T×T scores are
// never stored. One warp per query row (forward, dQ) or per key (dK, dV), four per block sharing
// tiles of 32 keys (or queries) in shared memory; a lane owns one key (or query) of a tile for
// the dot products, and the columns d = lane + 32r of the accumulators. Forward: an online
// softmax over the key tiles, each row's log-sum-exp kept. Backward recomputes P = exp(S − L):
// a first kernel takes each query's D = Σ_j P·dP and dQ = scale·Σ_j dS·k_j, a second each key's
// dK = scale·Σ_(h,i) dS·q_i and dV = Σ_(h,i) P·dO_i over the query heads of its group, so every
// gradient is written whole by one warp, in a fixed order: no atomics. Head size up to 128.
#include <cuda_runtime.h>

#include <cmath>

#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/device_index.cuh"
#include "runtime/cuda_launch.cuh"

namespace smelt {
namespace {

constexpr int kWarps = 4;    // query rows (or keys) per block
constexpr int kTile = 32;    // keys (or queries) per shared tile: one per lane
constexpr int kMaxHead = 128;
constexpr int kSlices = kMaxHead / 32;  // accumulator columns per lane

__host__ __device__ inline int64_t smaller(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ inline int64_t larger(int64_t a, int64_t b) { return a > b ? a : b; }

struct Dims {
  int64_t B, Tq, Tk, Hq, Hkv, D, group;
  float scale;
  bool causal;
  const int64_t* first_key;  // [B, Tq] or null
  // Query i may see keys [first(b, i), visible(i)).
  __device__ int64_t visible(int64_t i) const { return causal ? smaller(Tk, i + (Tk - Tq) + 1) : Tk; }
  __device__ int64_t first(int64_t b, int64_t i) const { return first_key ? first_key[b * Tq + i] : 0; }
  __device__ bool sees(int64_t b, int64_t i, int64_t j) const { return i < Tq && j < visible(i) && j >= first(b, i); }
};

__device__ inline float warp_sum(float v) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ inline float warp_max(float v) {
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The first key any of the block's query rows (kWarps from row0) may see, rounded down to a tile:
// with packed documents the keys before it are skipped whole.
__device__ int64_t first_key_tile(const Dims& d, int64_t b, int64_t row0) {
  __shared__ int64_t first;
  if (threadIdx.x == 0) {
    int64_t f = -1;
    for (int w = 0; w < kWarps && row0 + w < d.Tq; ++w) f = f < 0 ? d.first(b, row0 + w) : smaller(f, d.first(b, row0 + w));
    first = f < 0 ? 0 : f / kTile * kTile;
  }
  __syncthreads();
  return first;
}

// Rows [r0, r0 + 32) of one head of a [B, T, H, D] tensor (rows `stride` apart) into a shared
// tile with rows D + 1 apart (a lane reading its own row then hits its own bank); zeros past T.
__device__ void load_tile(float* tile, const float* src, int64_t stride, int64_t r0, int64_t T, int64_t D) {
  for (int64_t e = threadIdx.x; e < kTile * D; e += blockDim.x) {
    const int64_t r = e / D, c = e % D;
    tile[r * (D + 1) + c] = r0 + r < T ? src[(r0 + r) * stride + c] : 0.0f;
  }
}

__device__ inline float dot_row(const float* a, const float* tile_row, int64_t D) {
  float s = 0.0f;
  for (int64_t c = 0; c < D; ++c) s += a[c] * tile_row[c];
  return s;
}

__global__ void attention_forward_kernel(const float* q, const float* k, const float* v, Dims d, float* out, float* lse) {
  extern __shared__ float shared[];
  const int64_t D = d.D, b = blockIdx.z, h = blockIdx.y, g = h / d.group;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t i = blockIdx.x * kWarps + warp;  // this warp's query row
  const int64_t qs = d.Hq * D, ks = d.Hkv * D;
  float* kt = shared;
  float* vt = kt + kTile * (D + 1);
  float* qrow = vt + kTile * (D + 1) + warp * D;
  for (int64_t c = lane; c < D; c += 32) qrow[c] = i < d.Tq ? q[(b * d.Tq + i) * qs + h * D + c] : 0.0f;
  const float* kh = k + b * d.Tk * ks + g * D;
  const float* vh = v + b * d.Tk * ks + g * D;
  const int64_t last_row = smaller(d.Tq, (blockIdx.x + 1) * kWarps) - 1;
  const int64_t keys = d.visible(last_row), key_begin = first_key_tile(d, b, blockIdx.x * kWarps);
  float m = -INFINITY, l = 0.0f, acc[kSlices] = {};
  for (int64_t j0 = key_begin; j0 < keys; j0 += kTile) {
    __syncthreads();  // the previous tile is no longer read
    load_tile(kt, kh, ks, j0, d.Tk, D);
    load_tile(vt, vh, ks, j0, d.Tk, D);
    __syncthreads();
    const int64_t j = j0 + lane;
    const bool valid = d.sees(b, i, j);
    const float s = valid ? d.scale * dot_row(qrow, kt + lane * (D + 1), D) : -INFINITY;
    const float m_new = fmaxf(m, warp_max(s));
    if (m_new == -INFINITY) continue;  // no key of this row yet (warp-uniform)
    const float p = valid ? expf(s - m_new) : 0.0f, rescale = expf(m - m_new);
    l = l * rescale + warp_sum(p);
    for (int r = 0; r < kSlices; ++r) acc[r] *= rescale;
    for (int t = 0; t < kTile; ++t) {
      const float pt = __shfl_sync(0xffffffffu, p, t);
      if (pt == 0.0f) continue;
      for (int r = 0; r < kSlices; ++r)
        if (lane + 32 * r < D) acc[r] += pt * vt[t * (D + 1) + lane + 32 * r];
    }
    m = m_new;
  }
  if (i >= d.Tq) return;
  for (int r = 0; r < kSlices; ++r)
    if (lane + 32 * r < D) out[(b * d.Tq + i) * qs + h * D + lane + 32 * r] = l > 0.0f ? acc[r] / l : 0.0f;  // no keys: 0
  if (lane == 0) lse[(b * d.Hq + h) * d.Tq + i] = m + logf(l);
}

// Per query row: delta = Σ_j P_ij · dP_ij (dP = dO·vᵀ), then dQ = scale · Σ_j P_ij (dP_ij − delta) k_j.
__global__ void attention_dq_kernel(const float* q, const float* k, const float* v, const float* lse, const float* grad, Dims d, float* dq,
                                    float* delta) {
  extern __shared__ float shared[];
  const int64_t D = d.D, b = blockIdx.z, h = blockIdx.y, g = h / d.group;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t i = blockIdx.x * kWarps + warp;
  const int64_t qs = d.Hq * D, ks = d.Hkv * D;
  float* kt = shared;
  float* vt = kt + kTile * (D + 1);
  float* qrow = vt + kTile * (D + 1) + warp * 2 * D;
  float* grow = qrow + D;
  for (int64_t c = lane; c < D; c += 32) {
    qrow[c] = i < d.Tq ? q[(b * d.Tq + i) * qs + h * D + c] : 0.0f;
    grow[c] = i < d.Tq ? grad[(b * d.Tq + i) * qs + h * D + c] : 0.0f;
  }
  const float L = i < d.Tq ? lse[(b * d.Hq + h) * d.Tq + i] : 0.0f;
  const float* kh = k + b * d.Tk * ks + g * D;
  const float* vh = v + b * d.Tk * ks + g * D;
  const int64_t keys = d.visible(smaller(d.Tq, (blockIdx.x + 1) * kWarps) - 1), key_begin = first_key_tile(d, b, blockIdx.x * kWarps);
  float partial = 0.0f;
  for (int pass = 0; pass < 2; ++pass) {
    const float D_i = pass == 0 ? 0.0f : warp_sum(partial);
    float acc[kSlices] = {};
    for (int64_t j0 = key_begin; j0 < keys; j0 += kTile) {
      __syncthreads();
      load_tile(kt, kh, ks, j0, d.Tk, D);
      load_tile(vt, vh, ks, j0, d.Tk, D);
      __syncthreads();
      const int64_t j = j0 + lane;
      const bool valid = d.sees(b, i, j);
      const float p = valid ? expf(d.scale * dot_row(qrow, kt + lane * (D + 1), D) - L) : 0.0f;
      const float dp = valid ? dot_row(grow, vt + lane * (D + 1), D) : 0.0f;
      if (pass == 0) {
        partial += p * dp;
        continue;
      }
      const float ds = p * (dp - D_i);
      for (int t = 0; t < kTile; ++t) {
        const float st = __shfl_sync(0xffffffffu, ds, t);
        for (int r = 0; r < kSlices; ++r)
          if (lane + 32 * r < D) acc[r] += st * kt[t * (D + 1) + lane + 32 * r];
      }
    }
    if (pass == 1 && i < d.Tq) {
      for (int r = 0; r < kSlices; ++r)
        if (lane + 32 * r < D) dq[(b * d.Tq + i) * qs + h * D + lane + 32 * r] = d.scale * acc[r];
      if (lane == 0) delta[(b * d.Hq + h) * d.Tq + i] = D_i;
    }
  }
}

// Per key j of kv head g: dK_j = scale · Σ_(h in group, i) dS_ij q_i, dV_j = Σ_(h, i) P_ij dO_i.
__global__ void attention_dkv_kernel(const float* q, const float* k, const float* v, const float* lse, const float* grad, const float* delta,
                                     Dims d, float* dk, float* dv) {
  extern __shared__ float shared[];
  const int64_t D = d.D, b = blockIdx.z, g = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t j = blockIdx.x * kWarps + warp;  // this warp's key
  const int64_t qs = d.Hq * D, ks = d.Hkv * D;
  float* qt = shared;
  float* gt = qt + kTile * (D + 1);
  float* lt = gt + kTile * (D + 1);
  float* dt = lt + kTile;
  float* krow = dt + kTile + warp * 2 * D;
  float* vrow = krow + D;
  for (int64_t c = lane; c < D; c += 32) {
    krow[c] = j < d.Tk ? k[(b * d.Tk + j) * ks + g * D + c] : 0.0f;
    vrow[c] = j < d.Tk ? v[(b * d.Tk + j) * ks + g * D + c] : 0.0f;
  }
  // The first query that may see the block's first key (causal: i ≥ j − (Tk − Tq)).
  const int64_t j_first = blockIdx.x * kWarps;
  const int64_t i_begin = d.causal ? larger(0, j_first - (d.Tk - d.Tq)) : 0;
  float acc_k[kSlices] = {}, acc_v[kSlices] = {};
  for (int64_t h = g * d.group; h < (g + 1) * d.group; ++h) {
    const float* qh = q + b * d.Tq * qs + h * D;
    const float* gh = grad + b * d.Tq * qs + h * D;
    for (int64_t i0 = i_begin / kTile * kTile; i0 < d.Tq; i0 += kTile) {
      __syncthreads();
      load_tile(qt, qh, qs, i0, d.Tq, D);
      load_tile(gt, gh, qs, i0, d.Tq, D);
      for (int t = threadIdx.x; t < kTile; t += blockDim.x) {
        const bool in = i0 + t < d.Tq;
        lt[t] = in ? lse[(b * d.Hq + h) * d.Tq + i0 + t] : 0.0f;
        dt[t] = in ? delta[(b * d.Hq + h) * d.Tq + i0 + t] : 0.0f;
      }
      __syncthreads();
      const int64_t i = i0 + lane;
      const bool valid = j < d.Tk && d.sees(b, i, j);
      const float p = valid ? expf(d.scale * dot_row(krow, qt + lane * (D + 1), D) - lt[lane]) : 0.0f;
      const float ds = valid ? p * (dot_row(vrow, gt + lane * (D + 1), D) - dt[lane]) : 0.0f;
      for (int t = 0; t < kTile; ++t) {
        const float pt = __shfl_sync(0xffffffffu, p, t), st = __shfl_sync(0xffffffffu, ds, t);
        if (pt == 0.0f && st == 0.0f) continue;
        for (int r = 0; r < kSlices; ++r)
          if (lane + 32 * r < D) {
            acc_k[r] += st * qt[t * (D + 1) + lane + 32 * r];
            acc_v[r] += pt * gt[t * (D + 1) + lane + 32 * r];
          }
      }
    }
  }
  if (j >= d.Tk) return;
  for (int r = 0; r < kSlices; ++r)
    if (lane + 32 * r < D) {
      dk[(b * d.Tk + j) * ks + g * D + lane + 32 * r] = d.scale * acc_k[r];
      dv[(b * d.Tk + j) * ks + g * D + lane + 32 * r] = acc_v[r];
    }
}

// A query whose document starts at or past its causal limit has no key: reported.
__global__ void check_key_start_kernel(Dims d, unsigned long long* bad) {
  SMELT_GRID_STRIDE(bi, d.B * d.Tq) {
    const int64_t f = d.first_key[bi], i = bi % d.Tq;
    if (f < 0 || f >= d.visible(i)) report_bad_position(bad, bi);
  }
}

Dims dims_of(const Tensor& q, const Tensor& k, const Tensor& key_start, bool causal, float scale, const char* op) {
  const Dims d{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3), q.size(2) / k.size(2), scale, causal,
               key_start.defined() ? static_cast<const int64_t*>(key_start.device_data()) : nullptr};
  SMELT_CHECK(d.D <= kMaxHead, "op '", op, "' on ", q.device().str(), ": head size ", d.D, " (the CUDA kernel takes up to ", kMaxHead, ")");
  SMELT_CHECK(d.B <= 65535 && d.Hq <= 65535, "op '", op, "' on ", q.device().str(), ": ", d.B, " batches of ", d.Hq, " heads exceed one launch");
  return d;
}

// Checks key_start on the GPU before the kernels read it; raises the CPU's error.
void check_key_start(const Dims& d, const Tensor& key_start, const Tensor& on, const char* op) {
  if (!d.first_key || d.B * d.Tq == 0) return;
  unsigned long long* bad = cuda_bad_position_slot(on, op);
  check_key_start_kernel<<<cuda_grid_for(d.B * d.Tq), 256, 0, cuda_stream(on)>>>(d, bad);
  cuda_check_launch(on, op);
  const int64_t at = cuda_first_bad_position(on, op);
  if (at < 0) return;
  SMELT_FAIL("attention: key_start ", cuda_read_index(key_start, at, op), " at query ", at % d.Tq, " leaves no key to attend to");
}

dim3 grid_of(int64_t rows, int64_t heads, int64_t batches) {
  return dim3(static_cast<unsigned>((rows + kWarps - 1) / kWarps), static_cast<unsigned>(heads), static_cast<unsigned>(batches));
}

size_t tile_bytes(int64_t D) { return static_cast<size_t>(2 * kTile * (D + 1)) * sizeof(float); }

}  // namespace

void cuda_attention_op(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_start, bool causal, float scale, const Tensor& out,
                       const Tensor& lse) {
  const Dims d = dims_of(q, k, key_start, causal, scale, "attention");
  if (d.B * d.Tq * d.Hq == 0) return;
  check_key_start(d, key_start, out, "attention");
  const size_t shared = tile_bytes(d.D) + kWarps * d.D * sizeof(float);
  attention_forward_kernel<<<grid_of(d.Tq, d.Hq, d.B), kWarps * 32, shared, cuda_stream(out)>>>(f32(q), f32(k), f32(v), d, f32_out(out),
                                                                                               f32_out(lse));
  cuda_check_launch(out, "attention");
}

void cuda_attention_backward_op(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_start, const Tensor& lse,
                                const Tensor& grad, bool causal, float scale, const Tensor& dq, const Tensor& dk, const Tensor& dv) {
  const Dims d = dims_of(q, k, key_start, causal, scale, "attention_backward");
  if (d.B * d.Tq * d.Hq == 0) {  // no queries: the keys get no gradient
    cuda_clear(dk, "attention_backward");
    cuda_clear(dv, "attention_backward");
    return;
  }
  check_key_start(d, key_start, dq, "attention_backward");
  const Tensor delta = Tensor::empty({d.B, d.Hq, d.Tq}, DType::F32, dq.device());
  const cudaStream_t s = cuda_stream(dq);
  attention_dq_kernel<<<grid_of(d.Tq, d.Hq, d.B), kWarps * 32, tile_bytes(d.D) + 2 * kWarps * d.D * sizeof(float), s>>>(
      f32(q), f32(k), f32(v), f32(lse), f32(grad), d, f32_out(dq), f32_out(delta));
  if (d.Tk > 0)
    attention_dkv_kernel<<<grid_of(d.Tk, d.Hkv, d.B), kWarps * 32, tile_bytes(d.D) + (2 * kTile + 2 * kWarps * d.D) * sizeof(float), s>>>(
        f32(q), f32(k), f32(v), f32(lse), f32(grad), f32(delta), d, f32_out(dk), f32_out(dv));
  cuda_check_launch(dq, "attention_backward");
}

}  // namespace smelt
