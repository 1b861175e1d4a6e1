// Shared argument checks for the op implementations (internal to ops/).
#pragma once
#include "autograd/node.h"
#include "ops/backend.h"
#include "runtime/tensor.h"

namespace smelt::ops {

// Throws unless `t` is a defined f32 tensor; names the op and the argument.
void check_f32(const Tensor& t, const char* op, const char* arg);
// Throws unless `t` holds integer indices (i32 or i64).
void check_index(const Tensor& t, const char* op, const char* arg);
void check_same_device(const Tensor& a, const Tensor& b, const char* op);
// Contiguous version of t (a no-op when already contiguous). Not recorded for autograd.
Tensor contiguous_data(const Tensor& t);
// Reads index tensor element i (contiguous) as int64.
int64_t index_at(const Tensor& idx, int64_t i);

}  // namespace smelt::ops
