#include "ops/backend.h"

#include "runtime/error.h"

#include <array>
#include <atomic>

namespace smelt {

const char* op_kind_name(OpKind op) {
  switch (op) {
    case OpKind::Binary: return "binary";
    case OpKind::Unary: return "unary";
    case OpKind::UnaryBackward: return "unary_backward";
    case OpKind::Swiglu: return "swiglu";
    case OpKind::SwigluBackward: return "swiglu_backward";
    case OpKind::SumAxis: return "sum_axis";
    case OpKind::MaxAxis: return "max_axis";
    case OpKind::Matmul: return "matmul";
    case OpKind::Attention: return "attention";
    case OpKind::AttentionBackward: return "attention_backward";
    case OpKind::TopK: return "topk";
    case OpKind::MoeRoute: return "moe_route";
    case OpKind::CrossEntropy: return "cross_entropy";
    case OpKind::CrossEntropyBackward: return "cross_entropy_backward";
    case OpKind::LinearCrossEntropy: return "linear_cross_entropy";
    case OpKind::GradNorm: return "grad_norm";
    case OpKind::ScaleGrads: return "scale_grads";
    case OpKind::AdamW: return "adamw";
    case OpKind::Sgd: return "sgd";
    case OpKind::MoePermute: return "moe_permute";
    case OpKind::MoeExperts: return "moe_experts";
    case OpKind::MoeExpertsBackward: return "moe_experts_backward";
    case OpKind::IndexSelect: return "index_select";
    case OpKind::IndexAdd: return "index_add";
    case OpKind::Gather: return "gather";
    case OpKind::ScatterAdd: return "scatter_add";
    case OpKind::RmsNorm: return "rms_norm";
    case OpKind::RmsNormBackward: return "rms_norm_backward";
    case OpKind::Rope: return "rope";
    case OpKind::Softmax: return "softmax";
    case OpKind::SoftmaxBackward: return "softmax_backward";
    case OpKind::RandomFill: return "random_fill";
    case OpKind::Count: break;
  }
  return "?";
}

namespace {
std::array<std::atomic<const OpTable*>, kDeviceTypeCount>& op_registry() {
  static std::array<std::atomic<const OpTable*>, kDeviceTypeCount> r{};
  return r;
}
const OpTable* find_op_table(Device device) {
  if (device.is_cpu()) return &cpu_op_table();
  if (device.type == DeviceType::Sim && !op_registry()[static_cast<int>(device.type)].load()) return &sim_op_table();
#ifdef SMELT_HAVE_CUDA
  if (device.type == DeviceType::CUDA && !op_registry()[static_cast<int>(device.type)].load()) return &cuda_op_table();
#endif
  return op_registry()[static_cast<int>(device.type)].load();
}
}  // namespace

void register_op_table(DeviceType type, const OpTable* table) {
  SMELT_CHECK(type != DeviceType::CPU, "the CPU op table is built in and cannot be replaced");
  op_registry()[static_cast<int>(type)].store(table);
}

bool device_supports(Device device, OpKind op, DType dtype) {
  const OpTable* t = find_op_table(device);
  return t && t->supports(op, dtype);
}

const OpTable& op_table(Device device, OpKind op, DType dtype) {
  const OpTable* t = find_op_table(device);
  if (!t) {
    if (device.type == DeviceType::CUDA)
      SMELT_FAIL("op '", op_kind_name(op), "' on ", device.str(), ": this build has no CUDA backend (rebuild with nvcc present, -DSMELT_CUDA=ON)");
    SMELT_FAIL("op '", op_kind_name(op), "' on ", device.str(), ": no op table is registered for that device");
  }
  SMELT_CHECK(t->supports(op, dtype), "op '", op_kind_name(op), "' is not supported on ", device.str(), " (backend ", t->backend,
              ") for ", dtype_name(dtype), " inputs");
  return *t;
}

}  // namespace smelt
