// The CUDA op table's row-wise family over the last dimension, as ops/cpu/norm_ops.cc: RMS norm
// (optionally of a residual sum) and its backward, softmax / log-softmax and their backward,
// RoPE. One block per row, its sums taken in a fixed order (block_reduce.cuh); the weight
// gradient of RMS norm one thread per column, rows in order: no float atomics, so a run repeats
// bit for bit.
#include <cuda_runtime.h>

#include <cmath>

#include "ops/cuda/block_reduce.cuh"
#include "ops/cuda/cuda_ops.h"
#include "runtime/cuda_launch.cuh"

namespace smelt {
namespace {

constexpr float kNegInf = -INFINITY;

// out = v · rstd · w for v = x (or x + residual, also written to sum); rstd = 1 / √(mean v² + eps).
__global__ void rms_norm_kernel(const float* x, const float* residual, const float* w, float* sum, float* out, float* rstd, int64_t cols,
                                float eps) {
  const int64_t r = blockIdx.x;
  const float* xr = x + r * cols;
  float* yr = out + r * cols;
  float squares = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float v = xr[c];
    if (residual) {
      v += residual[r * cols + c];
      sum[r * cols + c] = v;
    }
    squares += v * v;
  }
  squares = block_sum(squares);
  const float s = 1.0f / sqrtf(squares / static_cast<float>(cols) + eps);
  if (rstd && threadIdx.x == 0) rstd[r] = s;
  const float* vr = residual ? sum + r * cols : xr;  // each thread rereads only what it wrote
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = vr[c] * s * w[c];
}

// dx = rstd · (w ⊙ g) − x · rstd³ · mean(w ⊙ g ⊙ x).
__global__ void rms_norm_backward_kernel(const float* x, const float* w, const float* rstd, const float* g, float* dx, int64_t cols) {
  const int64_t r = blockIdx.x;
  const float *xr = x + r * cols, *gr = g + r * cols;
  float dot = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dot += w[c] * gr[c] * xr[c];
  dot = block_sum(dot);
  const float rs = rstd[r], coef = dot / static_cast<float>(cols) * rs * rs * rs;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dx[r * cols + c] = w[c] * gr[c] * rs - coef * xr[c];
}

// dw[c] = Σ_rows g ⊙ x · rstd, each column by one thread, rows in order.
__global__ void rms_norm_weight_grad_kernel(const float* x, const float* rstd, const float* g, float* dw, int64_t rows, int64_t cols) {
  SMELT_GRID_STRIDE(c, cols) {
    float acc = 0.0f;
    for (int64_t r = 0; r < rows; ++r) acc += g[r * cols + c] * x[r * cols + c] * rstd[r];
    dw[c] = acc;
  }
}

// HF rotate-half of each head vector by sign · the position's angles; in place is safe (each
// thread reads its pair before writing it).
__global__ void rope_kernel(const float* x, const float* cos, const float* sin, float sign, float* out, int64_t T, int64_t H, int64_t half,
                            int64_t pairs) {
  SMELT_GRID_STRIDE(p, pairs) {
    const int64_t i = p % half, head = p / half, t = (head / H) % T;
    const float* xi = x + head * 2 * half;
    float* yi = out + head * 2 * half;
    const float a = xi[i], b = xi[i + half], c = cos[t * half + i], s = sign * sin[t * half + i];
    yi[i] = a * c - b * s;
    yi[i + half] = b * c + a * s;
  }
}

// Softmax (or log-softmax) of each row; lse (optional) gets log Σ exp. A fully masked row (all
// −∞) gives probabilities 0 (log: −∞) and lse −∞, as on the CPU.
__global__ void softmax_kernel(const float* x, float* out, float* lse, int64_t cols, bool log) {
  const int64_t r = blockIdx.x;
  const float* xr = x + r * cols;
  float* yr = out + r * cols;
  float mx = kNegInf;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) mx = max_keeping_nan(mx, xr[c]);
  mx = block_max(mx);  // a NaN in the row makes the row NaN, as on the CPU, not "fully masked"
  if (mx == kNegInf) {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = log ? kNegInf : 0.0f;
    if (lse && threadIdx.x == 0) lse[r] = kNegInf;
    return;
  }
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += expf(xr[c] - mx);
  sum = block_sum(sum);
  const float shift = mx + logf(sum);
  if (lse && threadIdx.x == 0) lse[r] = shift;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = log ? xr[c] - shift : expf(xr[c] - mx) / sum;
}

// softmax: dx = y ⊙ (g − Σ g⊙y); log-softmax: dx = g − exp(y) · Σ g (the sum in double, as on
// the CPU: rows can be a whole vocabulary).
__global__ void softmax_backward_kernel(const float* y, const float* g, float* dx, int64_t cols, bool log) {
  const int64_t r = blockIdx.x;
  const float *yr = y + r * cols, *gr = g + r * cols;
  double acc = 0.0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) acc += log ? gr[c] : gr[c] * yr[c];
  const float s = static_cast<float>(block_sum(acc));
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dx[r * cols + c] = log ? gr[c] - expf(yr[c]) * s : yr[c] * (gr[c] - s);
}

}  // namespace

void cuda_rms_norm_op(const Tensor& x, const Tensor& residual, const Tensor& w, float eps, const Tensor& sum, const Tensor& out,
                      const Tensor& rstd) {
  const int64_t rows = row_count(x), cols = last_dim(x);
  if (rows == 0) return;
  rms_norm_kernel<<<cuda_row_blocks(rows, out, "rms_norm"), kCudaRowThreads, 0, cuda_stream(out)>>>(f32(x), f32(residual), f32(w), f32_out(sum),
                                                                                               f32_out(out), f32_out(rstd), cols, eps);
  cuda_check_launch(out, "rms_norm");
}

void cuda_rms_norm_backward_op(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& g, const Tensor& dx, const Tensor& dw) {
  const int64_t rows = row_count(x), cols = last_dim(x);
  if (rows == 0) {  // no rows: dw is an empty sum
    if (dw.defined() && cols > 0) {
      const cudaError_t err = cudaMemsetAsync(f32_out(dw), 0, static_cast<size_t>(cols) * sizeof(float), cuda_stream(dw));
      SMELT_CHECK(err == cudaSuccess, "op 'rms_norm_backward' on ", dw.device().str(), ": clearing dw failed: ", cudaGetErrorString(err));
    }
    return;
  }
  rms_norm_backward_kernel<<<cuda_row_blocks(rows, dx, "rms_norm_backward"), kCudaRowThreads, 0, cuda_stream(dx)>>>(f32(x), f32(w), f32(rstd),
                                                                                                              f32(g), f32_out(dx), cols);
  cuda_check_launch(dx, "rms_norm_backward");
  if (!dw.defined()) return;
  rms_norm_weight_grad_kernel<<<cuda_grid_for(cols), 256, 0, cuda_stream(dw)>>>(f32(x), f32(rstd), f32(g), f32_out(dw), rows, cols);
  cuda_check_launch(dw, "rms_norm_backward");
}

void cuda_rope_op(const Tensor& x, const Tensor& cos, const Tensor& sin, float sign, const Tensor& out) {
  const int64_t T = x.size(1), H = x.size(2), half = x.size(3) / 2, pairs = x.numel() / 2;
  if (pairs == 0) return;
  rope_kernel<<<cuda_grid_for(pairs), 256, 0, cuda_stream(out)>>>(f32(x), f32(cos), f32(sin), sign, f32_out(out), T, H, half, pairs);
  cuda_check_launch(out, "rope");
}

void cuda_softmax_op(const Tensor& x, bool log, const Tensor& out, const Tensor& lse) {
  const int64_t rows = row_count(x), cols = last_dim(x);
  if (rows == 0) return;
  softmax_kernel<<<cuda_row_blocks(rows, out, "softmax"), kCudaRowThreads, 0, cuda_stream(out)>>>(f32(x), f32_out(out), f32_out(lse), cols, log);
  cuda_check_launch(out, "softmax");
}

void cuda_softmax_backward_op(const Tensor& y, const Tensor& g, bool log, const Tensor& dx) {
  const int64_t rows = row_count(y), cols = last_dim(y);
  if (rows == 0) return;
  softmax_backward_kernel<<<cuda_row_blocks(rows, dx, "softmax_backward"), kCudaRowThreads, 0, cuda_stream(dx)>>>(f32(y), f32(g), f32_out(dx),
                                                                                                          cols, log);
  cuda_check_launch(dx, "softmax_backward");
}

}  // namespace smelt
