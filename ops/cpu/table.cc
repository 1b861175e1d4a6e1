// The CPU's op table (ops/backend.h) and the SIMD target its kernels run.
#include "hwy/highway.h"
#include "hwy/targets.h"
#include "ops/backend.h"
#include "ops/cpu/cpu_ops.h"
#include "runtime/error.h"

#include <strings.h>

namespace smelt {

std::string cpu_simd_target() {
  // The best target that is both compiled in and supported by this CPU: what dispatch will use.
  const int64_t targets = static_cast<int64_t>(hwy::SupportedTargets()) & static_cast<int64_t>(HWY_TARGETS);
  for (int64_t bit = 1; bit != 0 && bit <= targets; bit <<= 1)
    if (targets & bit) return hwy::TargetName(bit);
  return "scalar";
}

void cpu_restrict_simd(const std::string& name) {
  const int64_t targets = static_cast<int64_t>(hwy::SupportedTargets()) & static_cast<int64_t>(HWY_TARGETS);
  std::string known;
  for (int64_t bit = 1; bit != 0 && bit <= targets; bit <<= 1) {
    if (!(targets & bit)) continue;
    std::string target = hwy::TargetName(bit);
    if (strcasecmp(target.c_str(), name.c_str()) == 0) {
      // Highway dispatches to the best of the targets it is told are supported: this one and
      // those below it.
      hwy::SetSupportedTargetsForTest(targets & ~(bit - 1));
      return;
    }
    known += (known.empty() ? "" : ", ") + target;
  }
  SMELT_FAIL("--simd: '", name, "' is not a SIMD target of this CPU and build (known: ", known, ")");
}

}  // namespace smelt

namespace smelt {
namespace {
bool cpu_supports(OpKind op, DType dtype) {
  // CPU compute is f32 (other dtypes convert at the edges), except that a bf16 or quantised
  // table is read by index_select and such weights by matmul and the experts: inference.
  if (op == OpKind::Count) return false;
  const bool weights = op == OpKind::IndexSelect || op == OpKind::Matmul || op == OpKind::MoeExperts || op == OpKind::MoeExpertsBackward ||
                       op == OpKind::LinearCrossEntropy;
  return dtype == DType::F32 || ((dtype == DType::BF16 || is_quantized(dtype)) && weights);
}
}  // namespace

const OpTable& cpu_op_table() {
  static const OpTable table = [] {
    OpTable t;
    t.backend = "cpu";
    t.supports = cpu_supports;
    t.binary = cpu_binary_op;
    t.unary = cpu_unary_op;
    t.unary_backward = cpu_unary_backward_op;
    t.swiglu = cpu_swiglu_op;
    t.swiglu_backward = cpu_swiglu_backward_op;
    t.sum_axis = cpu_sum_axis_op;
    t.max_axis = cpu_max_axis_op;
    t.matmul = cpu_matmul_op;
    t.matmul_many = cpu_matmul_many_op;
    t.attention = cpu_attention_op;
    t.attention_backward = cpu_attention_backward_op;
    t.topk = cpu_topk_op;
    t.cross_entropy = cpu_cross_entropy_op;
    t.cross_entropy_backward = cpu_cross_entropy_backward_op;
    t.linear_cross_entropy = cpu_linear_cross_entropy_op;
    t.grad_norm = cpu_grad_norm_op;
    t.scale_grads = cpu_scale_grads_op;
    t.adamw = cpu_adamw_op;
    t.sgd = cpu_sgd_op;
    t.moe_route = cpu_moe_route_op;
    t.moe_permute = cpu_moe_permute_op;
    t.moe_experts = cpu_moe_experts_op;
    t.moe_experts_backward = cpu_moe_experts_backward_op;
    t.index_select = cpu_index_select_op;
    t.index_add = cpu_index_add_op;
    t.gather = cpu_gather_op;
    t.scatter_add = cpu_scatter_add_op;
    t.rms_norm = cpu_rms_norm_op;
    t.rms_norm_backward = cpu_rms_norm_backward_op;
    t.rope = cpu_rope_op;
    t.softmax = cpu_softmax_op;
    t.softmax_backward = cpu_softmax_backward_op;
    t.random_fill = cpu_random_fill_op;
    return t;
  }();
  return table;
}

}  // namespace smelt
