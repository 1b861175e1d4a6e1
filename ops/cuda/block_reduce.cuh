// Sums and maxima (NaN-propagating) across a thread block, in a fixed order (warp shuffles, then the warps' partial
// results in warp order): the same inputs give the same bits on every run, which a resumed
// training run relies on (no float atomics anywhere in ops/cuda/).
#pragma once
#include <cuda_runtime.h>

namespace smelt {

constexpr int kCudaRowThreads = 256;  // threads per block of the row-wise kernels (8 warps)

// The block's reduction of v by `op` (identity: its neutral value), returned to every thread.
// blockDim.x a multiple of 32, at most 1024.
template <typename T, typename Op>
__device__ T block_reduce(T v, T identity, Op op) {
  __shared__ T partial[32];
  __shared__ T total;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset /= 2) v = op(v, __shfl_down_sync(0xffffffffu, v, offset));
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T r = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : identity;
    for (int offset = 16; offset > 0; offset /= 2) r = op(r, __shfl_down_sync(0xffffffffu, r, offset));
    if (lane == 0) total = r;
  }
  __syncthreads();
  const T out = total;
  __syncthreads();  // the shared slots may be reused by the caller's next reduction
  return out;
}

template <typename T>
__device__ T block_sum(T v) {
  return block_reduce(v, T(0), [](T a, T b) { return a + b; });
}

// The larger of a and b, or NaN if either is (fmaxf would drop it).
__device__ inline float max_keeping_nan(float a, float b) { return (b > a || b != b) ? b : a; }

__device__ inline float block_max(float v) {
  return block_reduce(v, -__int_as_float(0x7f800000), [](float a, float b) { return max_keeping_nan(a, b); });
}

}  // namespace smelt
