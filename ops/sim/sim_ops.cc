// The sim device's op table (runtime/sim_device.h): every entry runs the CPU's entry on host copies of its tensor
// arguments, then copies back each argument the CPU changed (the outputs). Slow by design; what
// it proves is that the op files reach device memory only through their backend.
#include <cstring>
#include <utility>
#include <vector>

#include "autograd/grad_mode.h"
#include "ops/backend.h"
#include "ops/shape.h"

namespace smelt {
namespace {

// A tensor argument's host copy, with a snapshot of its bytes to see whether the CPU wrote it.
struct Staged {
  Tensor device, host, base, before;  // host is base, or base transposed; before: base's bytes
};

template <typename T>
const T& stage(const T& value, std::vector<Staged>&) {
  return value;
}

Tensor stage(const Tensor& t, std::vector<Staged>& staged) {
  if (!t.defined() || t.device().is_cpu()) return t;
  // Contiguous, except that a transposed matrix stays transposed: the CPU's GEMM reads either
  // layout in place and picks its path by it (a weight's transpose against a few rows takes dot
  // products, another summation order than the packed path's), so sim must hand it the same one.
  NoGradGuard no_grad;
  const bool transposed = t.dim() >= 2 && !t.is_contiguous() && ops::transpose(t, -2, -1).is_contiguous();
  const Tensor base = transposed ? ops::transpose(t, -2, -1).to(Device::cpu()) : t.to(Device::cpu());
  const Tensor host = transposed ? ops::transpose(base, -2, -1) : base;
  staged.push_back({t, host, base, base.clone()});
  return host;
}

MoeDispatch stage(const MoeDispatch& d, std::vector<Staged>& staged) {
  return {stage(d.order, staged), stage(d.offsets, staged), stage(d.sorted_token, staged), stage(d.token_offsets, staged),
          stage(d.token_positions, staged)};
}

MoeRoute stage(const MoeRoute& r, std::vector<Staged>& staged) {
  return {stage(r.token, staged), stage(r.expert, staged), stage(r.flat, staged), stage(r.chosen, staged), stage(r.stats, staged)};
}

std::vector<Tensor> stage(const std::vector<Tensor>& ts, std::vector<Staged>& staged) {
  std::vector<Tensor> out;
  for (const Tensor& t : ts) out.push_back(stage(t, staged));
  return out;
}

void copy_back_written(const std::vector<Staged>& staged) {
  for (const Staged& s : staged) {
    const size_t bytes = static_cast<size_t>(s.base.numel()) * dtype_size(s.base.dtype());
    if (std::memcmp(s.base.raw_data(), s.before.raw_data(), bytes) != 0) s.device.copy_from(s.host);
  }
}

// Wraps the CPU table's entry `Member` (a function pointer of signature R(Args...)).
template <auto Member, typename R, typename... Args>
auto via_host(R (*OpTable::*)(Args...)) -> R (*)(Args...) {
  return [](Args... args) -> R {
    std::vector<Staged> staged;
    (cpu_op_table().*Member)(stage(args, staged)...);
    copy_back_written(staged);
  };
}
#define SIM_ENTRY(name) t.name = via_host<&OpTable::name>(&OpTable::name)

bool sim_supports(OpKind op, DType dtype) { return cpu_op_table().supports(op, dtype); }

}  // namespace

const OpTable& sim_op_table() {
  static const OpTable table = [] {
    OpTable t;
    t.backend = "sim (CPU kernels on host copies)";
    t.supports = sim_supports;
    SIM_ENTRY(binary);
    SIM_ENTRY(unary);
    SIM_ENTRY(unary_backward);
    SIM_ENTRY(swiglu);
    SIM_ENTRY(swiglu_backward);
    SIM_ENTRY(sum_axis);
    SIM_ENTRY(max_axis);
    SIM_ENTRY(matmul);
    SIM_ENTRY(attention);
    SIM_ENTRY(attention_backward);
    SIM_ENTRY(topk);
    SIM_ENTRY(cross_entropy);
    SIM_ENTRY(cross_entropy_backward);
    SIM_ENTRY(linear_cross_entropy);
    SIM_ENTRY(moe_route);
    SIM_ENTRY(grad_norm);
    SIM_ENTRY(scale_grads);
    SIM_ENTRY(adamw);
    SIM_ENTRY(sgd);
    SIM_ENTRY(moe_permute);
    SIM_ENTRY(moe_experts);
    SIM_ENTRY(moe_experts_backward);
    SIM_ENTRY(index_select);
    SIM_ENTRY(index_add);
    SIM_ENTRY(gather);
    SIM_ENTRY(scatter_add);
    SIM_ENTRY(rms_norm);
    SIM_ENTRY(rms_norm_backward);
    SIM_ENTRY(rope);
    SIM_ENTRY(softmax);
    SIM_ENTRY(softmax_backward);
    SIM_ENTRY(random_fill);
    return t;
  }();
  return table;
}

}  // namespace smelt
