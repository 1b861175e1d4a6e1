// The stable counting sort of buckets.cuh.
#include <cuda_runtime.h>

#include "ops/cuda/buckets.cuh"
#include "ops/cuda/cuda_ops.h"
#include "runtime/cuda_launch.cuh"

namespace smelt {
namespace {

constexpr int kScanThreads = 1024;

__device__ inline int64_t bucket_of(int64_t key, int64_t K) { return key < 0 ? K : key; }

// counts[b + 1] = the keys in bucket b (counts cleared first).
__global__ void count_kernel(IndexView keys, int64_t m, int64_t K, unsigned long long* counts) {
  SMELT_GRID_STRIDE(j, m) { atomicAdd(&counts[bucket_of(keys[j], K) + 1], 1ull); }
}

// In place, the inclusive prefix sum of v [n] (one block: each thread a contiguous chunk, the
// chunks' totals scanned by thread 0).
__global__ void prefix_sum_kernel(int64_t* v, int64_t n) {
  __shared__ int64_t before[kScanThreads];
  const int64_t chunk = (n + kScanThreads - 1) / kScanThreads;
  const int64_t lo = threadIdx.x * chunk, hi = lo + chunk < n ? lo + chunk : n;
  int64_t total = 0;
  for (int64_t i = lo; i < hi; ++i) total += v[i];
  before[threadIdx.x] = total;
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t run = 0;
    for (int t = 0; t < kScanThreads; ++t) {
      const int64_t own = before[t];
      before[t] = run;
      run += own;
    }
  }
  __syncthreads();
  int64_t run = before[threadIdx.x];
  for (int64_t i = lo; i < hi; ++i) v[i] = run += v[i];
}

// One warp: positions 32 at a time, each placed after the earlier positions of its bucket
// (its rank among the lanes with the same bucket, plus the bucket's cursor).
__global__ void place_kernel(IndexView keys, int64_t m, int64_t K, int64_t* cursor, int64_t* order) {
  const unsigned lane = threadIdx.x;
  for (int64_t base = 0; base < m; base += 32) {
    const int64_t j = base + lane;
    const unsigned live = __ballot_sync(0xffffffffu, j < m);
    if (j < m) {
      const int64_t b = bucket_of(keys[j], K);
      const unsigned peers = __match_any_sync(live, static_cast<unsigned long long>(b));
      const int rank = __popc(peers & ((1u << lane) - 1u));
      order[cursor[b] + rank] = j;
      __syncwarp(peers);  // every peer has read the cursor before the first of them moves it
      if (rank == 0) cursor[b] += __popc(peers);
    }
    __syncwarp();
  }
}

}  // namespace

void cuda_stable_buckets(IndexView keys, int64_t m, int64_t K, int64_t* offsets, int64_t* order, const Tensor& on, const char* op) {
  const cudaStream_t s = cuda_stream(on);
  cudaError_t err = cudaMemsetAsync(offsets, 0, static_cast<size_t>(K + 2) * sizeof(int64_t), s);
  SMELT_CHECK(err == cudaSuccess, "op '", op, "' on ", on.device().str(), ": clearing bucket counts failed: ", cudaGetErrorString(err));
  if (m == 0) return;
  count_kernel<<<cuda_grid_for(m), 256, 0, s>>>(keys, m, K, reinterpret_cast<unsigned long long*>(offsets));
  prefix_sum_kernel<<<1, kScanThreads, 0, s>>>(offsets, K + 2);
  const Tensor cursor = Tensor::empty({K + 1}, DType::I64, on.device());
  err = cudaMemcpyAsync(cursor.device_data(), offsets, static_cast<size_t>(K + 1) * sizeof(int64_t), cudaMemcpyDeviceToDevice, s);
  SMELT_CHECK(err == cudaSuccess, "op '", op, "' on ", on.device().str(), ": copying bucket offsets failed: ", cudaGetErrorString(err));
  place_kernel<<<1, 32, 0, s>>>(keys, m, K, static_cast<int64_t*>(cursor.device_data()), order);
  cuda_check_launch(on, op);
}

}  // namespace smelt
