// The CUDA op table: what ops/cuda/ implements so far. supports() answers for exactly those, so
// every other op on a CUDA tensor is a one-line "not supported on cuda:N" error, and the
// backend-ops harness reports it as lacking.
#include "ops/cuda/cuda_ops.h"
#include "runtime/cuda_device.h"

namespace smelt {
namespace {
bool cuda_supports(OpKind op, DType dtype) {
  if (dtype != DType::F32) return false;
  switch (op) {
    case OpKind::Binary:
    case OpKind::Unary:
    case OpKind::UnaryBackward:
    case OpKind::Swiglu:
    case OpKind::SwigluBackward:
    case OpKind::SumAxis:
    case OpKind::MaxAxis:
    case OpKind::Matmul:
    case OpKind::RmsNorm:
    case OpKind::RmsNormBackward:
    case OpKind::Rope:
    case OpKind::Softmax:
    case OpKind::SoftmaxBackward: return true;
    default: return false;
  }
}
}  // namespace

cudaStream_t cuda_stream(const Tensor& t) { return static_cast<cudaStream_t>(cuda_stream_handle(t.device().index)); }

void cuda_check_launch(const Tensor& t, const char* op) {
  const cudaError_t err = cudaGetLastError();
  SMELT_CHECK(err == cudaSuccess, "op '", op, "' on ", t.device().str(), ": kernel launch failed: ", cudaGetErrorString(err));
}

const OpTable& cuda_op_table() {
  static const OpTable table = [] {
    OpTable t;
    t.backend = "cuda";
    t.supports = cuda_supports;
    t.binary = cuda_binary_op;
    t.unary = cuda_unary_op;
    t.unary_backward = cuda_unary_backward_op;
    t.swiglu = cuda_swiglu_op;
    t.swiglu_backward = cuda_swiglu_backward_op;
    t.sum_axis = cuda_sum_axis_op;
    t.max_axis = cuda_max_axis_op;
    t.matmul = cuda_matmul_op;
    t.rms_norm = cuda_rms_norm_op;
    t.rms_norm_backward = cuda_rms_norm_backward_op;
    t.rope = cuda_rope_op;
    t.softmax = cuda_softmax_op;
    t.softmax_backward = cuda_softmax_backward_op;
    return t;
  }();
  return table;
}

}  // namespace smelt
