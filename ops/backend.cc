#include "ops/backend.h"

#include "runtime/error.h"

namespace smelt {

const KernelTable& kernels_for(Device device) {
  if (device.type == DeviceType::CPU) return cpu_kernels();
  SMELT_FAIL("no kernels for ", device.str(), " in this build (built without the CUDA backend)");
}

bool backend_supports(Device device, const std::string& op, DType dtype) {
  if (device.type != DeviceType::CPU) return false;
  const KernelTable& t = cpu_kernels();
  // CPU compute is f32 (other dtypes convert at the edges), except that the GEMMs also read a
  // bf16 B, widened as it is read (weights kept in bf16).
  const bool gemm_op = op == "gemm" || op == "grouped_gemm";
  if (dtype != DType::F32 && !(dtype == DType::BF16 && gemm_op)) return false;
  if (op == "binary") return t.binary != nullptr;
  if (op == "unary") return t.unary != nullptr;
  if (op == "gemm") return t.gemm != nullptr;
  if (op == "grouped_gemm") return t.grouped_gemm != nullptr;
  if (op == "rms_norm_forward") return t.rms_norm_forward != nullptr;
  if (op == "softmax") return t.softmax != nullptr;
  if (op == "axpy") return t.axpy != nullptr;
  if (op == "dot") return t.dot != nullptr;
  if (op == "adamw") return t.adamw != nullptr;
  return false;
}

}  // namespace smelt
