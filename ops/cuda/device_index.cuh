// Device-side reading of index tensors (contiguous i32 or i64, as the CPU's ops accept) and the
// report of a bad position (cuda_ops.h's slot): the lowest position at fault wins, whatever the
// order the threads ran in, so the error a user sees does not depend on timing.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/tensor.h"

namespace smelt {

struct IndexView {
  const void* data = nullptr;
  bool i64 = true;
  __device__ int64_t operator[](int64_t i) const {
    return i64 ? static_cast<const int64_t*>(data)[i] : static_cast<int64_t>(static_cast<const int32_t*>(data)[i]);
  }
};

inline IndexView index_view(const Tensor& t) { return {t.device_data(), t.dtype() == DType::I64}; }

__device__ inline void report_bad_position(unsigned long long* slot, int64_t position) {
  atomicMin(slot, static_cast<unsigned long long>(position));  // an integer minimum: the same whatever the order
}

}  // namespace smelt
