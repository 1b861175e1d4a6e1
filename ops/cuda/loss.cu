// The CUDA op table's cross-entropy, as ops/cpu/loss_ops.cc: one block per row for its
// log-sum-exp and loss, then one block adds the rows' losses and weights in order (in double):
// the mean repeats bit for bit. The linear cross-entropy makes the logits a chunk of rows at a
// time (cuBLAS), takes the chunk's loss and gradient in place, and never holds [N, V]. Targets and weights are checked in the kernels; the lowest bad
// row is raised with the CPU's words after the op.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "ops/cuda/block_reduce.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/device_index.cuh"
#include "runtime/cuda_launch.cuh"

namespace smelt {
namespace {

// What row r counts for: its weight (0 when ignored), or −1 when its target or weight is bad
// (reported, and the row then counts for nothing).
__device__ inline float row_weight(IndexView targets, const float* weights, int64_t ignore_index, int64_t V, int64_t r,
                                   unsigned long long* bad) {
  const int64_t t = targets[r];
  const float w = t == ignore_index ? 0.0f : (weights ? weights[r] : 1.0f);
  if ((t != ignore_index && (t < 0 || t >= V)) || !(w >= 0.0f)) {
    report_bad_position(bad, r);
    return -1.0f;
  }
  return w;
}

// A row's maximum and Σ exp(x − max) (0 for a row of −∞), over the block, in a fixed order.
struct RowExp {
  float max, sum;
};
__device__ RowExp row_exp(const float* row, int64_t V) {
  float mx = -INFINITY;
  for (int64_t c = threadIdx.x; c < V; c += blockDim.x) mx = max_keeping_nan(mx, row[c]);
  mx = block_max(mx);
  float sum = 0.0f;
  if (mx != -INFINITY)
    for (int64_t c = threadIdx.x; c < V; c += blockDim.x) sum += expf(row[c] - mx);
  return {mx, block_sum(sum)};
}

// lse[r] = log Σ exp(logits[r]) (−∞ for a row of −∞), loss_w[2r] = w · (lse − logit of the
// target), loss_w[2r + 1] = w.
__global__ void cross_entropy_rows_kernel(const float* logits, IndexView targets, const float* weights, int64_t ignore_index, int64_t V,
                                          float* lse, double* loss_w, unsigned long long* bad) {
  const int64_t r = blockIdx.x;
  const float* row = logits + r * V;
  const RowExp e = row_exp(row, V);
  if (threadIdx.x != 0) return;
  const float l = e.max == -INFINITY ? e.max : e.max + logf(e.sum);
  lse[r] = l;
  const float w = row_weight(targets, weights, ignore_index, V, r, bad);
  loss_w[2 * r] = w > 0.0f ? static_cast<double>(w * (l - row[targets[r]])) : 0.0;  // in float, as the CPU
  loss_w[2 * r + 1] = w > 0.0f ? w : 0.0;
}

__global__ void row_weights_kernel(IndexView targets, const float* weights, int64_t ignore_index, int64_t V, int64_t N, double* loss_w,
                                   unsigned long long* bad) {
  SMELT_GRID_STRIDE(r, N) {
    const float w = row_weight(targets, weights, ignore_index, V, r, bad);
    loss_w[2 * r] = 0.0;
    loss_w[2 * r + 1] = w > 0.0f ? w : 0.0;
  }
}

// sums[0] = Σ losses, sums[1] = Σ weights, each in order; loss (when given) = the mean.
__global__ void cross_entropy_total_kernel(const double* loss_w, int64_t N, double* sums, float* loss) {
  double l = 0.0, w = 0.0;
  for (int64_t r = threadIdx.x; r < N; r += blockDim.x) {
    l += loss_w[2 * r];
    w += loss_w[2 * r + 1];
  }
  l = block_sum(l);
  w = block_sum(w);
  if (threadIdx.x != 0) return;
  sums[0] = l;
  sums[1] = w;
  if (loss) *loss = w > 0 ? static_cast<float>(l / w) : 0.0f;
}

// dlogits[r] = g · w_r / Σw · (softmax − onehot(target)); dlogits may be logits itself (each
// thread reads the values it then writes; the target's entry is fixed after a barrier).
__global__ void cross_entropy_backward_kernel(const float* logits, IndexView targets, const double* loss_w, const double* sums,
                                              const float* lse, const float* g, int64_t V, float* dlogits) {
  const int64_t r = blockIdx.x;
  const float scale = sums[1] > 0 ? *g / static_cast<float>(sums[1]) : 0.0f;
  const float s = static_cast<float>(loss_w[2 * r + 1]) * scale;
  const float l = lse[r];
  float* d = dlogits + r * V;
  for (int64_t c = threadIdx.x; c < V; c += blockDim.x) d[c] = s == 0.0f ? 0.0f : expf(logits[r * V + c] - l) * s;
  __syncthreads();
  if (threadIdx.x == 0 && s != 0.0f) d[targets[r]] -= s;
}

// One chunk of the linear cross-entropy: rows r0 + blockIdx.x, their logits [rows, V] in place.
// loss_w[2r] gets the row's weighted loss (its weight, checked, is loss_w[2r + 1]); with grad,
// the logits become d logits = w / Σw · (softmax − onehot(target)) for an upstream 1.
__global__ void linear_cross_entropy_rows_kernel(float* logits, IndexView targets, int64_t r0, int64_t V, double* loss_w, const double* sums,
                                                 bool grad) {
  const int64_t r = r0 + blockIdx.x;
  float* row = logits + blockIdx.x * V;
  const RowExp e = row_exp(row, V);
  const float mx = e.max, sum = e.sum;
  const float w = static_cast<float>(loss_w[2 * r + 1]);
  const int64_t t = w > 0.0f ? targets[r] : 0;
  if (threadIdx.x == 0) loss_w[2 * r] = w > 0.0f ? static_cast<double>(w * (mx + logf(sum) - row[t])) : 0.0;
  if (!grad) return;
  __syncthreads();  // the target's logit is read before any thread overwrites it
  const float s = sums[1] > 0 ? w * static_cast<float>(1.0 / sums[1]) : 0.0f;
  for (int64_t c = threadIdx.x; c < V; c += blockDim.x) row[c] = s == 0.0f ? 0.0f : expf(row[c] - mx) / sum * s;
  __syncthreads();
  if (threadIdx.x == 0 && s != 0.0f) row[t] -= s;
}

// Raises the CPU's error for the lowest bad row, if a kernel reported one.
void raise_bad_row(const Tensor& on, const Tensor& targets, const Tensor& weights, int64_t ignore_index, int64_t V, const char* op) {
  const int64_t r = cuda_first_bad_position(on, op);
  if (r < 0) return;
  const int64_t t = cuda_read_index(targets, r, op);
  SMELT_CHECK(t == ignore_index || (t >= 0 && t < V), op, ": target ", t, " at row ", r, " out of range [0, ", V, ")");
  float w = 0.0f;
  cuda_read(weights, r * 4, &w, 4, op);
  SMELT_FAIL(op, ": negative weight ", w, " at row ", r);
}

// Per row (loss, weight) pairs and their two sums, in 8-byte slots.
struct Scratch {
  Tensor loss_w, sums;
  Scratch(int64_t N, const Tensor& on)
      : loss_w(Tensor::empty({std::max<int64_t>(2 * N, 1)}, DType::I64, on.device())), sums(Tensor::empty({2}, DType::I64, on.device())) {}
  double* rows() const { return static_cast<double*>(loss_w.device_data()); }
  double* totals() const { return static_cast<double*>(sums.device_data()); }
};

}  // namespace

void cuda_linear_cross_entropy_op(const Tensor& hidden, const Tensor& head, const Tensor& targets, const Tensor& weights,
                                  int64_t ignore_index, int64_t chunk_rows, const Tensor& loss, const Tensor& d_hidden, const Tensor& d_weight) {
  const Tensor weight = cuda_f32_weight(head);  // a bf16 head (inference) widened for the call
  const int64_t V = weight.size(0), C = weight.size(1), N = targets.numel();
  const char* op = "linear_cross_entropy";
  const Scratch scratch(N, loss);
  unsigned long long* bad = cuda_bad_position_slot(loss, op);
  const cudaStream_t s = cuda_stream(loss);
  // The rows' weights and their sum first: each chunk's gradient needs Σw.
  if (N > 0) row_weights_kernel<<<cuda_grid_for(N), 256, 0, s>>>(index_view(targets), f32(weights), ignore_index, V, N, scratch.rows(), bad);
  cross_entropy_total_kernel<<<1, kCudaRowThreads, 0, s>>>(scratch.rows(), N, scratch.totals(), nullptr);
  // Rows per chunk: its logits ([R, V], 8 MiB by default) are the only vocabulary-wide buffer.
  const int64_t R = std::clamp<int64_t>(chunk_rows > 0 ? chunk_rows : (int64_t{2} << 20) / std::max<int64_t>(V, 1), 1, std::max<int64_t>(N, 1));
  const bool grad = d_hidden.defined() || d_weight.defined();
  const Tensor logits = Tensor::empty({R, V}, DType::F32, loss.device());
  if (d_weight.defined()) cuda_clear(d_weight, op);
  const float *h = f32(hidden), *w = f32(weight);
  float* pl = f32_out(logits);
  for (int64_t r0 = 0; r0 < N; r0 += R) {
    const int64_t n = std::min(R, N - r0);
    cuda_gemm(loss, n, V, C, h + r0 * C, C, false, w, C, true, pl, V, 0.0f);  // logits = h_c · Wᵀ
    linear_cross_entropy_rows_kernel<<<cuda_row_blocks(n, loss, op), kCudaRowThreads, 0, s>>>(pl, index_view(targets), r0, V, scratch.rows(),
                                                                                             scratch.totals(), grad);
    cuda_check_launch(loss, op);
    if (d_hidden.defined()) cuda_gemm(loss, n, C, V, pl, V, false, w, C, false, f32_out(d_hidden) + r0 * C, C, 0.0f);  // d h_c = d logits · W
    if (d_weight.defined()) cuda_gemm(loss, V, C, n, pl, V, true, h + r0 * C, C, false, f32_out(d_weight), C, 1.0f);  // d W += d logitsᵀ · h_c
  }
  cross_entropy_total_kernel<<<1, kCudaRowThreads, 0, s>>>(scratch.rows(), N, scratch.totals(), f32_out(loss));
  cuda_check_launch(loss, op);
  raise_bad_row(loss, targets, weights, ignore_index, V, op);
}

void cuda_cross_entropy_op(const Tensor& logits, const Tensor& targets, const Tensor& weights, int64_t ignore_index, const Tensor& loss,
                           const Tensor& lse) {
  const int64_t V = logits.size(-1), N = targets.numel();
  const Scratch scratch(N, loss);
  unsigned long long* bad = cuda_bad_position_slot(loss, "cross_entropy");
  const cudaStream_t s = cuda_stream(loss);
  if (N > 0)
    cross_entropy_rows_kernel<<<cuda_row_blocks(N, loss, "cross_entropy"), kCudaRowThreads, 0, s>>>(
        f32(logits), index_view(targets), f32(weights), ignore_index, V, f32_out(lse), scratch.rows(), bad);
  cross_entropy_total_kernel<<<1, kCudaRowThreads, 0, s>>>(scratch.rows(), N, scratch.totals(), f32_out(loss));
  cuda_check_launch(loss, "cross_entropy");
  raise_bad_row(loss, targets, weights, ignore_index, V, "cross_entropy");
}

void cuda_cross_entropy_backward_op(const Tensor& logits, const Tensor& targets, const Tensor& weights, int64_t ignore_index,
                                    const Tensor& lse, const Tensor& g, const Tensor& dlogits) {
  const int64_t V = logits.size(-1), N = targets.numel();
  if (N == 0) return;
  const Scratch scratch(N, dlogits);
  unsigned long long* bad = cuda_bad_position_slot(dlogits, "cross_entropy");
  const cudaStream_t s = cuda_stream(dlogits);
  row_weights_kernel<<<cuda_grid_for(N), 256, 0, s>>>(index_view(targets), f32(weights), ignore_index, V, N, scratch.rows(), bad);
  cross_entropy_total_kernel<<<1, kCudaRowThreads, 0, s>>>(scratch.rows(), N, scratch.totals(), nullptr);
  cross_entropy_backward_kernel<<<cuda_row_blocks(N, dlogits, "cross_entropy_backward"), kCudaRowThreads, 0, s>>>(
      f32(logits), index_view(targets), scratch.rows(), scratch.totals(), f32(lse), f32(g), V, f32_out(dlogits));
  cuda_check_launch(dlogits, "cross_entropy_backward");
  raise_bad_row(dlogits, targets, weights, ignore_index, V, "cross_entropy");
}

}  // namespace smelt
