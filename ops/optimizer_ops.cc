#include "ops/optimizer_ops.h"

#include "ops/common.h"

namespace smelt::ops {
namespace {

// Every tensor contiguous f32 on one device; returns that device.
Device common_device(const std::vector<const std::vector<Tensor>*>& lists, const char* op) {
  Device device;
  bool first = true;
  for (const auto* list : lists)
    for (const Tensor& t : *list) {
      check_f32(t, op, "tensor");
      SMELT_CHECK(t.is_contiguous(), op, ": needs contiguous tensors, got a strided ", t.str());
      if (first) device = t.device();
      SMELT_CHECK(t.device() == device, op, ": tensors on ", device.str(), " and ", t.device().str());
      first = false;
    }
  return device;
}

void check_pairs(const std::vector<Tensor>& a, const std::vector<Tensor>& b, const char* op) {
  SMELT_CHECK(a.size() == b.size(), op, ": ", a.size(), " parameters but ", b.size(), " companions");
  for (size_t i = 0; i < a.size(); ++i)
    SMELT_CHECK(a[i].shape() == b[i].shape(), op, ": parameter ", i, " is ", a[i].str(), " but its companion ", b[i].str());
}

}  // namespace

Tensor grad_norm(const std::vector<Tensor>& grads, float max_norm) {
  const Device d = grads.empty() ? Device::cpu() : common_device({&grads}, "grad_norm");
  Tensor out = Tensor::empty({3}, DType::F32, d);
  op_table(d, OpKind::GradNorm, DType::F32).grad_norm(grads, max_norm, out);
  return out;
}

Tensor grad_norm_with_squares(const std::vector<Tensor>& grads) {
  const Device d = grads.empty() ? Device::cpu() : common_device({&grads}, "grad_norm");
  Tensor out = Tensor::empty({5}, DType::F32, d);
  op_table(d, OpKind::GradNorm, DType::F32).grad_norm(grads, 0.0f, out);
  return out;
}

void scale_grads(const std::vector<Tensor>& grads, const Tensor& clip) {
  if (grads.empty()) return;
  const Device d = common_device({&grads}, "scale_grads");
  op_table(d, OpKind::ScaleGrads, DType::F32).scale_grads(grads, clip);
  for (const Tensor& g : grads) g.bump_version();
}

void adamw_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
                const std::vector<Tensor>& v, const AdamWStep& step, const Tensor& clip) {
  if (params.empty()) return;
  check_pairs(params, grads, "adamw");
  check_pairs(params, m, "adamw");
  check_pairs(params, v, "adamw");
  const Device d = common_device({&params, &grads, &m, &v}, "adamw");
  op_table(d, OpKind::AdamW, DType::F32).adamw(params, grads, m, v, step, clip);
  for (const Tensor& p : params) p.bump_version();
}

void sgd_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& buf, const SgdStep& step,
              const Tensor& clip) {
  if (params.empty()) return;
  check_pairs(params, grads, "sgd");
  check_pairs(params, buf, "sgd");
  const Device d = common_device({&params, &grads, &buf}, "sgd");
  op_table(d, OpKind::Sgd, DType::F32).sgd(params, grads, buf, step, clip);
  for (const Tensor& p : params) p.bump_version();
}

}  // namespace smelt::ops
