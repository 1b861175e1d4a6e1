// The CUDA op table's top-k, as cpu_topk_op (ops/cpu/moe_ops.cc): each row's k largest entries,
// largest first, ties to the lower index (NaN ranks as −∞). One thread per row (a router's rows are a few dozen
// experts wide): k passes, each taking the best entry ranked after the previous pick.
#include <cuda_runtime.h>

#include <cmath>

#include "ops/cuda/cuda_ops.h"
#include "runtime/cuda_launch.cuh"

namespace smelt {
namespace {

// A score as ranked: NaN as −∞, so that the order is total (a NaN never leaves a pick empty).
__device__ inline float rank_key(float v) { return v != v ? -INFINITY : v; }

// Whether entry a ranks before entry b: larger first, the lower index on ties.
__device__ inline bool ranks_before(const float* row, int64_t a, int64_t b) {
  const float ka = rank_key(row[a]), kb = rank_key(row[b]);
  return ka > kb || (ka == kb && a < b);
}

__global__ void topk_kernel(const float* x, int64_t N, int64_t E, int64_t k, int64_t* out) {
  SMELT_GRID_STRIDE(n, N) {
    const float* row = x + n * E;
    int64_t previous = -1;
    for (int64_t j = 0; j < k; ++j) {
      int64_t best = -1;
      for (int64_t e = 0; e < E; ++e) {
        if (previous >= 0 && !ranks_before(row, previous, e)) continue;  // taken already
        if (best < 0 || ranks_before(row, e, best)) best = e;
      }
      out[n * k + j] = previous = best;
    }
  }
}

}  // namespace

void cuda_topk_op(const Tensor& x, int64_t k, const Tensor& out) {
  const int64_t N = x.size(0), E = x.size(1);
  if (N == 0 || k == 0) return;
  topk_kernel<<<cuda_grid_for(N), 128, 0, cuda_stream(out)>>>(f32(x), N, E, k, static_cast<int64_t*>(out.device_data()));
  cuda_check_launch(out, "topk");
}

}  // namespace smelt
