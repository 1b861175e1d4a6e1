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

// Rows of an f32 matrix x [R, C] to the other ranks: the first send_counts[0] rows to rank 0, the
// next send_counts[1] to rank 1, ...; returns the rows received, [Σ recv_counts, C], rank by rank
// (recv_counts[p] from rank p). A new host tensor.
Tensor all_to_all_rows(const Tensor& x, const std::vector<int64_t>& send_counts, const std::vector<int64_t>& recv_counts, Communicator& comm);
// Every rank's f32 tensor of the same shape [n, ...] stacked along dim 0 in rank order:
// [size·n, ...]. A new host tensor.
Tensor all_gather_rows(const Tensor& x, Communicator& comm);

}  // namespace smelt
