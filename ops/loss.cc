// Cross-entropy losses: checks, one call to the device's op table, the backward beside each.
// Targets and weights are checked by the backend as it reads them; the loss stays a tensor on
// the device (the caller reads it when it needs the number).
#include "ops/loss.h"

#include "ops/common.h"

namespace smelt::ops {
namespace {

void check_targets(const char* op, const Tensor& like, const Tensor& targets, const Tensor& weights, int64_t N) {
  check_index(targets, op, "targets");
  check_same_device(like, targets, op);
  SMELT_CHECK(targets.numel() == N, op, ": ", N, " rows but targets ", targets.str());
  if (weights.defined()) {
    check_f32(weights, op, "weights");
    check_same_device(like, weights, op);
    SMELT_CHECK(weights.numel() == N, op, ": weights ", weights.str(), " for ", N, " rows");
  }
}

// `t` times the scalar tensor g: in place when nothing else holds t (it is the node's own buffer).
Tensor scaled_by(Tensor t, const Tensor& g) {
  if (!t.defined()) return t;
  Tensor out = t.is_sole_reference() ? t : Tensor::empty(t.shape(), DType::F32, t.device());
  op_table(t.device(), OpKind::Binary, DType::F32).binary(BinaryOp::Mul, t, g, out);
  return out;
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const Tensor& weights) {
  check_f32(logits, "cross_entropy", "logits");
  const int64_t V = logits.size(-1), N = logits.numel() / std::max<int64_t>(V, 1);
  check_targets("cross_entropy", logits, targets, weights, N);
  const Device dev = logits.device();
  const OpTable& B = op_table(dev, OpKind::CrossEntropy, DType::F32);
  const Tensor lc = contiguous_data(logits), tc = contiguous_data(targets), wc = weights.defined() ? contiguous_data(weights) : Tensor();
  Tensor out = Tensor::empty({}, DType::F32, dev);
  const Tensor lse = Tensor::empty({N}, DType::F32, dev);  // log-sum-exp per row, for backward
  B.cross_entropy(lc, tc, wc, ignore_index, out, lse);
  if (!needs_grad({&logits})) return out;
  SavedTensor L(lc, "cross_entropy");
  const Shape ls = logits.shape();
  attach_grad_fn(out, "cross_entropy", {logits}, [=](const Tensor& g) mutable {
    // When nothing else holds the logits (the usual training step), their gradient overwrites
    // them: the largest activation of a step is not allocated a second time.
    Tensor lv = L.take();
    Tensor dl = lv.is_sole_reference() ? lv : Tensor::empty(ls, DType::F32, dev);
    op_table(dev, OpKind::CrossEntropyBackward, DType::F32).cross_entropy_backward(lv, tc, wc, ignore_index, lse, g, dl);
    return std::vector<Tensor>{dl};
  });
  return out;
}

Tensor linear_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets, int64_t ignore_index,
                            const Tensor& weights, int64_t chunk_rows) {
  check_f32(hidden, "linear_cross_entropy", "hidden");
  check_weight(weight, "linear_cross_entropy", "weight");
  check_same_device(hidden, weight, "linear_cross_entropy");
  SMELT_CHECK(weight.dim() == 2 && hidden.dim() >= 1 && hidden.size(-1) == weight.size(1), "linear_cross_entropy: hidden ",
              hidden.str(), " does not match the weight ", weight.str(), " ([vocab, hidden])");
  const int64_t V = weight.size(0), C = weight.size(1), N = hidden.numel() / std::max<int64_t>(C, 1);
  check_targets("linear_cross_entropy", hidden, targets, weights, N);
  const Device dev = hidden.device();
  const OpTable& B = op_table(dev, OpKind::LinearCrossEntropy, weight.dtype());
  const bool grad = needs_grad({&hidden, &weight}), need_h = grad && hidden.requires_grad(), need_w = grad && weight.requires_grad();
  Tensor d_hidden = need_h ? Tensor::empty(hidden.shape(), DType::F32, dev) : Tensor();
  Tensor d_weight = need_w ? Tensor::empty({V, C}, DType::F32, dev) : Tensor();  // not for a frozen or bf16 head
  Tensor out = Tensor::empty({}, DType::F32, dev);
  B.linear_cross_entropy(contiguous_data(hidden), contiguous_data(weight), contiguous_data(targets),
                         weights.defined() ? contiguous_data(weights) : Tensor(), ignore_index, chunk_rows, out, d_hidden, d_weight);
  if (!grad) return out;
  attach_grad_fn(out, "linear_cross_entropy", {hidden, weight}, [=](const Tensor& g) mutable {
    return std::vector<Tensor>{scaled_by(std::move(d_hidden), g), scaled_by(std::move(d_weight), g)};
  });
  return out;
}

}  // namespace smelt::ops
