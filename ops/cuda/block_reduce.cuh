// Sums and maxima across a thread block, in a fixed order (warp shuffles, then the warps' partial
// results in warp order): the same inputs give the same bits on every run, which a resumed
// training run relies on (no float atomics anywhere in ops/cuda/).
#pragma once
#include <cuda_runtime.h>

namespace smelt {

constexpr int kCudaRowThreads = 256;  // threads per block of the row-wise kernels (8 warps)

template <typename T>
__device__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

__device__ inline float warp_max(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, offset));
  return v;
}

// The block's total of v, returned to every thread. blockDim.x a multiple of 32, at most 1024.
template <typename T>
__device__ T block_sum(T v) {
  __shared__ T partial[32];
  __shared__ T total;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T s = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : T(0);
    s = warp_sum(s);
    if (lane == 0) total = s;
  }
  __syncthreads();
  const T out = total;
  __syncthreads();  // the shared slots may be reused by the caller's next reduction
  return out;
}

// The block's maximum of v, returned to every thread.
__device__ inline float block_max(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_max(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float m = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : -__int_as_float(0x7f800000);
    m = warp_max(m);
    if (lane == 0) total = m;
  }
  __syncthreads();
  const float out = total;
  __syncthreads();
  return out;
}

}  // namespace smelt
