// Differentiable exchanges between the ranks of a job (expert parallelism): rows of a matrix sent
// to the ranks that own their experts and the gradients sent back the same way. Every rank must
// call the op the same number of times in the same order, in forward and (through autograd) in
// backward.
#pragma once
#include <vector>

#include "runtime/communicator.h"
#include "runtime/tensor.h"

namespace smelt::ops {

// x [R, C]: send_counts[p] consecutive rows go to rank p; returns the rows received,
// [Σ recv_counts, C], rank by rank. The backward sends the gradient rows back (the counts swap).
Tensor all_to_all_rows(const Tensor& x, const std::vector<int64_t>& send_counts, const std::vector<int64_t>& recv_counts, Communicator& comm);

}  // namespace smelt::ops
