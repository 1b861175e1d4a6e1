// Launch helpers shared by the CUDA device backend (runtime/cuda_device.cu) and the CUDA op
// table (ops/cuda/): the grid size of a grid-stride loop, the loop itself, and the element
// offsets of two views walked together over one shape (a copy's destination and source, a
// binary op's two broadcast operands).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "runtime/error.h"
#include "runtime/tensor.h"

namespace smelt {

// Blocks of 256 threads for n elements, capped: each thread then strides over the rest.
inline int cuda_grid_for(int64_t n) { return static_cast<int>(std::min<int64_t>((n + 255) / 256, 65535 * 4)); }

#define SMELT_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); i += static_cast<int64_t>(gridDim.x) * blockDim.x)

constexpr int kCudaMaxDims = 8;

// Two views over one shape, passed by value to a kernel.
struct TwoStrides {
  int nd;
  int64_t shape[kCudaMaxDims];
  int64_t first[kCudaMaxDims], second[kCudaMaxDims];
  int64_t first_offset, second_offset;

  // The element offsets of row-major element i of the shape in each view.
  __device__ void at(int64_t i, int64_t& a, int64_t& b) const {
    a = first_offset;
    b = second_offset;
    for (int k = nd - 1; k >= 0; --k) {
      const int64_t idx = i % shape[k];
      i /= shape[k];
      a += idx * first[k];
      b += idx * second[k];
    }
  }
};

// `what` names the op in the error when the shape has more dimensions than a kernel walks.
inline TwoStrides two_strides(const Shape& shape, const Shape& first, int64_t first_offset, const Shape& second, int64_t second_offset,
                              const char* what) {
  SMELT_CHECK(shape.size() <= static_cast<size_t>(kCudaMaxDims), what, ": ", shape_str(shape), " has more than ", kCudaMaxDims, " dimensions");
  TwoStrides t{};
  t.nd = static_cast<int>(shape.size());
  for (size_t k = 0; k < shape.size(); ++k) {
    t.shape[k] = shape[k];
    t.first[k] = first[k];
    t.second[k] = second[k];
  }
  t.first_offset = first_offset;
  t.second_offset = second_offset;
  return t;
}

}  // namespace smelt
