// Collectives over lists of f32 tensors: the values are flattened into buckets of one host
// buffer (whole tensors while they fit; a larger tensor goes alone), the collective runs once per
// bucket, and the results are copied back. Fewer, larger messages than one call per tensor.
#pragma once
#include <vector>

#include "runtime/communicator.h"
#include "runtime/tensor.h"

namespace smelt {

constexpr int64_t kDefaultBucketFloats = int64_t{1} << 22;  // 16 MiB

// Each tensor becomes its element-wise sum over the ranks.
void all_reduce_sum(const std::vector<Tensor>& tensors, Communicator& comm, int64_t bucket_floats = kDefaultBucketFloats);
// Each tensor becomes root's values.
void broadcast(const std::vector<Tensor>& tensors, Communicator& comm, int root, int64_t bucket_floats = kDefaultBucketFloats);

}  // namespace smelt
