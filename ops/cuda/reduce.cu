// The CUDA op table's reductions, as ops/cpu/reduce_ops.cc: one axis of a contiguous
// [outer, n, inner] view. A reduction along the last axis (inner = 1: a row) takes one block per
// row, summed in double in a fixed order; any other axis one thread per output, down the axis in
// order (consecutive threads read consecutive elements). No atomics: results repeat bit for bit.
#include <cuda_runtime.h>

#include "ops/common.h"
#include "ops/cuda/block_reduce.cuh"
#include "ops/cuda/cuda_ops.h"
#include "runtime/cuda_launch.cuh"

namespace smelt {
namespace {

__global__ void sum_rows_kernel(const float* x, float* out, int64_t n) {
  const float* row = x + blockIdx.x * n;
  double acc = 0.0;  // rows can be long (a whole vocabulary)
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += row[i];
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[blockIdx.x] = static_cast<float>(acc);
}

__global__ void sum_axis_kernel(const float* x, float* out, int64_t n, int64_t inner, int64_t outputs) {
  SMELT_GRID_STRIDE(o, outputs) {
    const float* base = x + (o / inner) * n * inner + o % inner;
    float acc = 0.0f;
    for (int64_t i = 0; i < n; ++i) acc += base[i * inner];
    out[o] = acc;
  }
}

// The first maximum wins ties (its index into the axis, as i64).
__global__ void max_axis_kernel(const float* x, float* out, int64_t* argmax, int64_t n, int64_t inner, int64_t outputs) {
  SMELT_GRID_STRIDE(o, outputs) {
    const float* base = x + (o / inner) * n * inner + o % inner;
    float best = base[0];
    int64_t at = 0;
    for (int64_t i = 1; i < n; ++i) {
      const float v = base[i * inner];
      if (v > best) {
        best = v;
        at = i;
      }
    }
    out[o] = best;
    argmax[o] = at;
  }
}

}  // namespace

void cuda_sum_axis_op(const Tensor& x, int64_t dim, const Tensor& out) {
  const ops::AxisView v = ops::axis_view(x.shape(), dim);
  const int64_t outputs = v.outer * v.inner;
  if (outputs == 0) return;
  if (v.inner == 1 && v.outer < (int64_t{1} << 31)) {
    sum_rows_kernel<<<static_cast<unsigned>(v.outer), kCudaRowThreads, 0, cuda_stream(out)>>>(f32(x), f32_out(out), v.n);
  } else {
    sum_axis_kernel<<<cuda_grid_for(outputs), 256, 0, cuda_stream(out)>>>(f32(x), f32_out(out), v.n, v.inner, outputs);
  }
  cuda_check_launch(out, "sum_axis");
}

void cuda_max_axis_op(const Tensor& x, int64_t dim, const Tensor& out, const Tensor& argmax) {
  const ops::AxisView v = ops::axis_view(x.shape(), dim);
  const int64_t outputs = v.outer * v.inner;
  if (outputs == 0 || v.n == 0) return;
  max_axis_kernel<<<cuda_grid_for(outputs), 256, 0, cuda_stream(out)>>>(f32(x), f32_out(out), static_cast<int64_t*>(argmax.device_data()),
                                                                      v.n, v.inner, outputs);
  cuda_check_launch(out, "max_axis");
}

}  // namespace smelt
