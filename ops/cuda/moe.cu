// The CUDA op table's MoE dispatch and experts, as ops/cpu/moe_ops.cc. Permute: a stable bucket
// sort of the slots by expert (dropped slots last), then of the kept sorted positions by token
// (buckets.cuh); no host round trip. Experts: the per-expert segment sizes are read back once
// per call (cuBLAS takes them from the host), the token rows gathered into one [kept, C] block,
// then each expert's SwiGLU runs as cuBLAS GEMMs over its segment (the experts' products of one
// stage as one group: cuda_gemm_group), and one block per token
// combines its slots in sorted order, each scaled row rounded before it is added (as the CPU
// does, so expert-parallel runs add the same bits). No float atomics anywhere.
#include <cuda_runtime.h>

#include <vector>

#include "ops/cuda/block_reduce.cuh"
#include "ops/cuda/buckets.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/device_index.cuh"
#include "runtime/cuda_launch.cuh"

namespace smelt {
namespace {

const int64_t* i64(const Tensor& t) { return static_cast<const int64_t*>(t.device_data()); }
int64_t* i64_out(const Tensor& t) { return static_cast<int64_t*>(t.device_data()); }

// expert_key[s] = the slot's expert (−1: dropped), or −1 for a bad slot, which is reported.
__global__ void check_slots_kernel(IndexView token, IndexView expert, int64_t S, int64_t N, int64_t E, int64_t* expert_key,
                                   unsigned long long* bad) {
  SMELT_GRID_STRIDE(s, S) {
    const int64_t t = token[s], e = expert[s];
    const bool ok = t >= 0 && t < N && e >= -1 && e < E;
    if (!ok) report_bad_position(bad, s);
    expert_key[s] = ok ? e : -1;
  }
}

// sorted_token[i] = the token of sorted position i; token_key[i] = that token for kept
// positions (i < offsets[E]), −1 for dropped ones (they sort last, in order).
__global__ void sorted_tokens_kernel(IndexView token, const int64_t* order, const int64_t* offsets, int64_t S, int64_t N, int64_t E,
                                     int64_t* sorted_token, int64_t* token_key) {
  SMELT_GRID_STRIDE(i, S) {
    const int64_t t = token[order[i]];
    sorted_token[i] = t;
    token_key[i] = i < offsets[E] && t >= 0 && t < N ? t : -1;
  }
}

// rows[i] = x[sorted_token[i]] for the kept positions.
__global__ void gather_rows_kernel(const float* x, const int64_t* sorted_token, int64_t C, int64_t total, float* rows) {
  SMELT_GRID_STRIDE(e, total) { rows[e] = x[sorted_token[e / C] * C + e % C]; }
}

__device__ inline float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

// act = silu(h) ⊙ u.
__global__ void swiglu_kernel(const float* h, const float* u, float* act, int64_t n) {
  SMELT_GRID_STRIDE(i, n) { act[i] = h[i] * sigmoid(h[i]) * u[i]; }
}

// From dact: du = dact ⊙ silu(h), dh = dact ⊙ u ⊙ silu'(h).
__global__ void swiglu_backward_kernel(const float* h, const float* u, const float* dact, float* dh, float* du, int64_t n) {
  SMELT_GRID_STRIDE(i, n) {
    const float s = sigmoid(h[i]);
    du[i] = dact[i] * h[i] * s;
    dh[i] = dact[i] * u[i] * s * (1.0f + h[i] * (1.0f - s));
  }
}

// out[n] = Σ over token n's slots (sorted positions, in order) of scale · rows[i], where scale
// is weight[order[i]] (or 1 without weights); zeros for a token without slots.
__global__ void combine_kernel(const float* rows, const float* weight, const int64_t* order, const int64_t* token_offsets,
                               const int64_t* token_positions, int64_t C, float* out) {
  const int64_t n = blockIdx.x, first = token_offsets[n], last = token_offsets[n + 1];
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    float acc = 0.0f;
    for (int64_t p = first; p < last; ++p) {
      const int64_t i = token_positions[p];
      const float scaled = weight ? __fmul_rn(rows[i * C + c], weight[order[i]]) : rows[i * C + c];
      acc = p == first ? scaled : __fadd_rn(acc, scaled);
    }
    out[n * C + c] = acc;
  }
}

// For sorted position i: dweight[slot] = grad[token] · ys[i] and dys[i] = weight[slot] · grad[token]
// (kept positions); a dropped slot gets dweight 0.
__global__ void slot_grads_kernel(const float* grad, const float* ys, const float* weight, const int64_t* order, const int64_t* sorted_token,
                                  const int64_t* offsets, int64_t E, int64_t C, float* dweight, float* dys) {
  const int64_t i = blockIdx.x, s = order[i];
  if (i >= offsets[E]) {
    if (threadIdx.x == 0) dweight[s] = 0.0f;
    return;
  }
  const float* g = grad + sorted_token[i] * C;
  float dot = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    dot += g[c] * ys[i * C + c];
    dys[i * C + c] = g[c] * weight[s];
  }
  dot = block_sum(dot);
  if (threadIdx.x == 0) dweight[s] = dot;
}

void copy_device(int64_t* dst, const int64_t* src, int64_t n, const Tensor& on, const char* op) {
  const cudaError_t err = cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * sizeof(int64_t), cudaMemcpyDeviceToDevice, cuda_stream(on));
  SMELT_CHECK(err == cudaSuccess, "op '", op, "' on ", on.device().str(), ": device copy failed: ", cudaGetErrorString(err));
}

// fn(expert, first sorted row, rows) for each expert with tokens (one without does no work and
// keeps a zero gradient).
template <typename Fn>
void for_each_segment(const std::vector<int64_t>& offsets, Fn&& fn) {
  for (size_t e = 0; e + 1 < offsets.size(); ++e)
    if (offsets[e + 1] > offsets[e]) fn(static_cast<int64_t>(e), offsets[e], offsets[e + 1] - offsets[e]);
}

// The experts' segment bounds, read back to the host (cuBLAS takes its sizes from there).
std::vector<int64_t> host_offsets(const MoeDispatch& d, const char* op) {
  std::vector<int64_t> v(static_cast<size_t>(d.offsets.numel()));
  cuda_read(d.offsets, 0, v.data(), v.size() * sizeof(int64_t), op);
  return v;
}

// The kept token rows of x, in sorted order ([kept, C]).
Tensor gathered_rows(const Tensor& x, const MoeDispatch& d, int64_t kept, const char* op) {
  const int64_t C = x.size(1);
  Tensor rows = Tensor::empty({kept, C}, DType::F32, x.device());
  if (kept * C > 0)
    gather_rows_kernel<<<cuda_grid_for(kept * C), 256, 0, cuda_stream(x)>>>(f32(x), i64(d.sorted_token), C, kept * C, f32_out(rows));
  cuda_check_launch(x, op);
  return rows;
}

void combine(const Tensor& rows, const Tensor& weight, const MoeDispatch& d, const Tensor& out, const char* op) {
  const int64_t N = out.size(0), C = out.size(1);
  if (N == 0) return;
  combine_kernel<<<cuda_row_blocks(N, out, op), 128, 0, cuda_stream(out)>>>(f32(rows), f32(weight), i64(d.order), i64(d.token_offsets),
                                                                            i64(d.token_positions), C, f32_out(out));
  cuda_check_launch(out, op);
}

}  // namespace

void cuda_moe_permute_op(const Tensor& token, const Tensor& expert, const MoeDispatch& d) {
  const int64_t S = token.numel(), E = d.offsets.numel() - 1, N = d.token_offsets.numel() - 1;
  const Tensor& on = d.order;
  const cudaStream_t s = cuda_stream(on);
  const Tensor expert_key = Tensor::empty({std::max<int64_t>(S, 1)}, DType::I64, on.device());
  const Tensor token_key = Tensor::empty({std::max<int64_t>(S, 1)}, DType::I64, on.device());
  const Tensor expert_bounds = Tensor::empty({E + 2}, DType::I64, on.device()), token_bounds = Tensor::empty({N + 2}, DType::I64, on.device());
  unsigned long long* bad = cuda_bad_position_slot(on, "moe_permute");
  if (S > 0) check_slots_kernel<<<cuda_grid_for(S), 256, 0, s>>>(index_view(token), index_view(expert), S, N, E, i64_out(expert_key), bad);
  cuda_stable_buckets(IndexView{expert_key.device_data(), true}, S, E, i64_out(expert_bounds), i64_out(d.order), on, "moe_permute");
  copy_device(i64_out(d.offsets), i64(expert_bounds), E + 1, on, "moe_permute");
  if (S > 0)
    sorted_tokens_kernel<<<cuda_grid_for(S), 256, 0, s>>>(index_view(token), i64(d.order), i64(d.offsets), S, N, E, i64_out(d.sorted_token),
                                                         i64_out(token_key));
  // Dropped positions sort last in their own order: token_positions[i] = i there, as on the CPU.
  cuda_stable_buckets(IndexView{token_key.device_data(), true}, S, N, i64_out(token_bounds), i64_out(d.token_positions), on, "moe_permute");
  copy_device(i64_out(d.token_offsets), i64(token_bounds), N + 1, on, "moe_permute");
  cuda_check_launch(on, "moe_permute");
  const int64_t at = cuda_first_bad_position(on, "moe_permute");
  if (at < 0) return;
  const int64_t t = cuda_read_index(token, at, "moe_permute"), e = cuda_read_index(expert, at, "moe_permute");
  SMELT_CHECK(t >= 0 && t < N, "moe_ffn: token index ", t, " out of range [0, ", N, ")");
  SMELT_FAIL("moe_ffn: expert index ", e, " out of range [0, ", E, ") (or −1: dropped)");
}

void cuda_moe_experts_op(const Tensor& x, const Tensor& gate_in, const Tensor& up_in, const Tensor& down_in, const Tensor& weight,
                         const MoeDispatch& d, const Tensor& h, const Tensor& u, const Tensor& act, const Tensor& ys, const Tensor& out) {
  // bf16 experts (inference) widened to f32 for the call, as the CPU widens them when it packs.
  const Tensor gate = cuda_f32_weight(gate_in), up = cuda_f32_weight(up_in), down = cuda_f32_weight(down_in);
  const std::vector<int64_t> offsets = host_offsets(d, "moe_experts");
  const int64_t E = gate.size(0), F = gate.size(1), C = gate.size(2), kept = offsets[E];
  const Tensor xs = gathered_rows(x, d, kept, "moe_experts");
  const float *pxs = f32(xs), *pg = f32(gate), *pu_w = f32(up), *pd = f32(down);
  float *ph = f32_out(h), *pu = f32_out(u), *pa = f32_out(act), *py = f32_out(ys);
  std::vector<CudaGemm> gate_up, down_products;
  for_each_segment(offsets, [&](int64_t e, int64_t r0, int64_t n) {
    gate_up.push_back({n, F, C, pxs + r0 * C, C, false, pg + e * F * C, C, true, ph + r0 * F, F, 0.0f});
    gate_up.push_back({n, F, C, pxs + r0 * C, C, false, pu_w + e * F * C, C, true, pu + r0 * F, F, 0.0f});
    down_products.push_back({n, C, F, pa + r0 * F, F, false, pd + e * C * F, F, true, py + r0 * C, C, 0.0f});
  });
  cuda_gemm_group(out, gate_up);
  if (kept * F > 0) swiglu_kernel<<<cuda_grid_for(kept * F), 256, 0, cuda_stream(out)>>>(ph, pu, pa, kept * F);
  cuda_check_launch(out, "moe_experts");
  cuda_gemm_group(out, down_products);
  combine(ys, weight, d, out, "moe_experts");
}

void cuda_moe_experts_backward_op(const Tensor& x, const Tensor& gate_in, const Tensor& up_in, const Tensor& down_in, const Tensor& weight,
                                  const MoeDispatch& d, const Tensor& h, const Tensor& u, const Tensor& act, const Tensor& ys,
                                  const Tensor& grad, const Tensor& dx, const Tensor& dgate, const Tensor& dup, const Tensor& ddown,
                                  const Tensor& dweight) {
  const Tensor gate = cuda_f32_weight(gate_in), up = cuda_f32_weight(up_in), down = cuda_f32_weight(down_in);
  const std::vector<int64_t> offsets = host_offsets(d, "moe_experts_backward");
  const int64_t E = gate.size(0), F = gate.size(1), C = gate.size(2), S = d.order.numel(), kept = offsets[E];
  const cudaStream_t s = cuda_stream(dx);
  const Device dev = dx.device();
  const Tensor dys = Tensor::empty({kept, C}, DType::F32, dev), dact = Tensor::empty({kept, F}, DType::F32, dev);
  const Tensor dh = Tensor::empty({kept, F}, DType::F32, dev), du = Tensor::empty({kept, F}, DType::F32, dev);
  const Tensor dxs = Tensor::empty({kept, C}, DType::F32, dev);
  if (S > 0)
    slot_grads_kernel<<<cuda_row_blocks(S, dx, "moe_experts_backward"), 128, 0, s>>>(
        f32(grad), f32(ys), f32(weight), i64(d.order), i64(d.sorted_token), i64(d.offsets), E, C, f32_out(dweight), f32_out(dys));
  for (const Tensor* t : {&dgate, &dup, &ddown})
    if (t->defined()) cuda_clear(*t, "moe_experts_backward");  // an expert without tokens keeps a zero gradient
  const float *pa = f32(act), *pdys = f32(dys);
  float *pda = f32_out(dact), *pdh = f32_out(dh), *pdu = f32_out(du), *pdxs = f32_out(dxs);
  // down: y = act · Wdᵀ  →  dWd = dyᵀ · act,  dact = dy · Wd
  std::vector<CudaGemm> down_grads;
  for_each_segment(offsets, [&](int64_t e, int64_t r0, int64_t n) {
    if (ddown.defined()) down_grads.push_back({C, F, n, pdys + r0 * C, C, true, pa + r0 * F, F, false, f32_out(ddown) + e * C * F, F, 0.0f});
    down_grads.push_back({n, F, C, pdys + r0 * C, C, false, f32(down) + e * C * F, F, false, pda + r0 * F, F, 0.0f});
  });
  cuda_gemm_group(dx, down_grads);
  if (kept * F > 0) swiglu_backward_kernel<<<cuda_grid_for(kept * F), 256, 0, s>>>(f32(h), f32(u), pda, pdh, pdu, kept * F);
  cuda_check_launch(dx, "moe_experts_backward");
  // h = xs · Wgᵀ, u = xs · Wuᵀ  →  dWg = dhᵀ · xs, dWu = duᵀ · xs, dxs = dh · Wg + du · Wu
  const Tensor xs = gathered_rows(x, d, kept, "moe_experts_backward");
  const float* pxs = f32(xs);
  // (the du · Wu half adds into dxs, so it runs as a second group after the first has written it)
  std::vector<CudaGemm> first, second;
  for_each_segment(offsets, [&](int64_t e, int64_t r0, int64_t n) {
    if (dgate.defined()) first.push_back({F, C, n, pdh + r0 * F, F, true, pxs + r0 * C, C, false, f32_out(dgate) + e * F * C, C, 0.0f});
    if (dup.defined()) first.push_back({F, C, n, pdu + r0 * F, F, true, pxs + r0 * C, C, false, f32_out(dup) + e * F * C, C, 0.0f});
    first.push_back({n, C, F, pdh + r0 * F, F, false, f32(gate) + e * F * C, C, false, pdxs + r0 * C, C, 0.0f});
    second.push_back({n, C, F, pdu + r0 * F, F, false, f32(up) + e * F * C, C, false, pdxs + r0 * C, C, 1.0f});
  });
  cuda_gemm_group(dx, first);
  cuda_gemm_group(dx, second);
  combine(dxs, Tensor(), d, dx, "moe_experts_backward");
}

}  // namespace smelt
