// The CUDA op table: what ops/cuda/ implements so far. supports() answers for exactly those, so
// every other op on a CUDA tensor is a one-line "not supported on cuda:N" error, and the
// backend-ops harness reports it as lacking.
#include "ops/cuda/cuda_ops.h"
#include "runtime/cuda_device.h"

#include <map>
#include <mutex>

namespace smelt {
namespace {
bool cuda_supports(OpKind op, DType dtype) {
  if (dtype == DType::BF16) {  // bf16 weights (inference), widened to f32 as the CPU widens them
    switch (op) {
      case OpKind::IndexSelect:
      case OpKind::Matmul:
      case OpKind::MoeExperts:
      case OpKind::MoeExpertsBackward:
      case OpKind::LinearCrossEntropy: return true;
      default: return false;
    }
  }
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
    case OpKind::Attention:
    case OpKind::AttentionBackward:
    case OpKind::RmsNorm:
    case OpKind::RmsNormBackward:
    case OpKind::Rope:
    case OpKind::Softmax:
    case OpKind::SoftmaxBackward:
    case OpKind::IndexSelect:
    case OpKind::IndexAdd:
    case OpKind::Gather:
    case OpKind::ScatterAdd:
    case OpKind::GradNorm:
    case OpKind::ScaleGrads:
    case OpKind::AdamW:
    case OpKind::Sgd:
    case OpKind::RandomFill:
    case OpKind::CrossEntropy:
    case OpKind::CrossEntropyBackward:
    case OpKind::LinearCrossEntropy:
    case OpKind::TopK:
    case OpKind::MoeRoute:
    case OpKind::MoePermute:
    case OpKind::MoeExperts:
    case OpKind::MoeExpertsBackward: return true;
    default: return false;
  }
}
}  // namespace

cudaStream_t cuda_stream(const Tensor& t) { return static_cast<cudaStream_t>(cuda_stream_handle(t.device().index)); }

void cuda_check_launch(const Tensor& t, const char* op) {
  const cudaError_t err = cudaGetLastError();
  SMELT_CHECK(err == cudaSuccess, "op '", op, "' on ", t.device().str(), ": kernel launch failed: ", cudaGetErrorString(err));
}

unsigned cuda_row_blocks(int64_t rows, const Tensor& t, const char* op) {
  SMELT_CHECK(rows < (int64_t{1} << 31), "op '", op, "' on ", t.device().str(), ": ", rows, " rows exceed one launch");
  return static_cast<unsigned>(rows);
}

void cuda_clear(const Tensor& t, const char* op) {
  const size_t bytes = static_cast<size_t>(t.numel()) * dtype_size(t.dtype());
  if (bytes == 0) return;
  const cudaError_t err = cudaMemsetAsync(t.device_data(), 0, bytes, cuda_stream(t));
  SMELT_CHECK(err == cudaSuccess, "op '", op, "' on ", t.device().str(), ": clearing ", bytes, " bytes failed: ", cudaGetErrorString(err));
}

void cuda_read(const Tensor& t, int64_t offset, void* host, size_t bytes, const char* op) {
  const cudaStream_t s = cuda_stream(t);
  cudaError_t err = cudaMemcpyAsync(host, static_cast<const char*>(t.device_data()) + offset, bytes, cudaMemcpyDeviceToHost, s);
  if (err == cudaSuccess) err = cudaStreamSynchronize(s);
  SMELT_CHECK(err == cudaSuccess, "op '", op, "' on ", t.device().str(), ": reading ", bytes, " bytes back failed: ", cudaGetErrorString(err));
}

namespace {
// The bad-input slot of t's GPU, made on first use; one per GPU, never freed (it lives as long
// as the process).
unsigned long long* bad_position_slot_of(const Tensor& t, const char* op) {
  static std::mutex mu;
  static std::map<int, unsigned long long*> slots;
  std::lock_guard<std::mutex> lock(mu);
  unsigned long long*& slot = slots[t.device().index];
  if (!slot) {
    const cudaError_t err = cudaMalloc(&slot, sizeof *slot);
    SMELT_CHECK(err == cudaSuccess, "op '", op, "' on ", t.device().str(), ": allocating the bad-input slot failed: ", cudaGetErrorString(err));
  }
  return slot;
}
}  // namespace

unsigned long long* cuda_bad_position_slot(const Tensor& t, const char* op) {
  const cudaStream_t s = cuda_stream(t);  // makes t's GPU current
  unsigned long long* slot = bad_position_slot_of(t, op);
  const cudaError_t err = cudaMemsetAsync(slot, 0xff, sizeof *slot, s);  // all ones: nothing reported
  SMELT_CHECK(err == cudaSuccess, "op '", op, "' on ", t.device().str(), ": resetting the bad-input slot failed: ", cudaGetErrorString(err));
  return slot;
}

int64_t cuda_first_bad_position(const Tensor& t, const char* op) {
  const cudaStream_t s = cuda_stream(t);
  unsigned long long v = 0;
  cudaError_t err = cudaMemcpyAsync(&v, bad_position_slot_of(t, op), sizeof v, cudaMemcpyDeviceToHost, s);
  if (err == cudaSuccess) err = cudaStreamSynchronize(s);
  SMELT_CHECK(err == cudaSuccess, "op '", op, "' on ", t.device().str(), ": reading the bad-input slot failed: ", cudaGetErrorString(err));
  return v == ~0ull ? -1 : static_cast<int64_t>(v);
}

int64_t cuda_read_index(const Tensor& index, int64_t i, const char* op) {
  if (index.dtype() == DType::I64) {
    int64_t v = 0;
    cuda_read(index, i * 8, &v, 8, op);
    return v;
  }
  int32_t v = 0;
  cuda_read(index, i * 4, &v, 4, op);
  return v;
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
    t.attention = cuda_attention_op;
    t.attention_backward = cuda_attention_backward_op;
    t.rms_norm = cuda_rms_norm_op;
    t.rms_norm_backward = cuda_rms_norm_backward_op;
    t.rope = cuda_rope_op;
    t.softmax = cuda_softmax_op;
    t.softmax_backward = cuda_softmax_backward_op;
    t.index_select = cuda_index_select_op;
    t.index_add = cuda_index_add_op;
    t.gather = cuda_gather_op;
    t.scatter_add = cuda_scatter_add_op;
    t.grad_norm = cuda_grad_norm_op;
    t.scale_grads = cuda_scale_grads_op;
    t.adamw = cuda_adamw_op;
    t.sgd = cuda_sgd_op;
    t.random_fill = cuda_random_fill_op;
    t.cross_entropy = cuda_cross_entropy_op;
    t.cross_entropy_backward = cuda_cross_entropy_backward_op;
    t.linear_cross_entropy = cuda_linear_cross_entropy_op;
    t.topk = cuda_topk_op;
    t.moe_route = cuda_moe_route_op;
    t.moe_permute = cuda_moe_permute_op;
    t.moe_experts = cuda_moe_experts_op;
    t.moe_experts_backward = cuda_moe_experts_backward_op;
    return t;
  }();
  return table;
}

}  // namespace smelt
