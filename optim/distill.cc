#include "optim/distill.h"

#include "autograd/grad_mode.h"
#include "ops/ops.h"

namespace smelt {
namespace {

// alpha · kd + (1 − alpha) · ce, then the student's balancing loss.
Tensor mix(const Transformer& student, const Tensor& kd, const Tensor& ce, const DistillOptions& o, double* aux) {
  const Tensor loss = ops::add(ops::mul(kd, static_cast<float>(o.alpha)), ops::mul(ce, static_cast<float>(1.0 - o.alpha)));
  return with_auxiliary_loss(student, loss, aux);
}

}  // namespace

void DistillOptions::validate() const {
  SMELT_CHECK(temperature > 0, "--temperature must be positive, got ", temperature);
  SMELT_CHECK(alpha >= 0 && alpha <= 1, "--alpha must be in [0, 1], got ", alpha);
  SMELT_CHECK(beta > 0 && beta < 1, "--beta must be in (0, 1), got ", beta);
}

LossFn online_distill_loss(std::shared_ptr<const Transformer> teacher, DistillOptions o) {
  o.validate();
  return [teacher, o](const Transformer& student, const Batch& b, double* aux) {
    const Tensor logits = forward_logits(student, b);
    const int64_t V = logits.size(-1);
    Tensor teacher_logits;
    {
      NoGradGuard no_grad;
      teacher_logits = ops::reshape(teacher->forward(b.ids), {-1, V});
    }
    const Tensor kd = ops::distill_loss(ops::reshape(logits, {-1, V}), teacher_logits, o.kind, o.temperature, o.beta, loss_token_mask(b));
    return mix(student, kd, next_token_loss(logits, b), o, aux);
  };
}

LossFn cached_distill_loss(std::shared_ptr<const TeacherCache> cache, DistillOptions o) {
  o.validate();
  return [cache, o](const Transformer& student, const Batch& b, double* aux) {
    SMELT_CHECK(!b.starts.empty(), "distill: the batch does not say where its windows start (needed to find cached predictions)");
    const Tensor logits = forward_logits(student, b);
    const int64_t V = logits.size(-1);
    Tensor ids, logp;
    cache->lookup(b.starts, ids, logp);
    const Tensor kd = ops::distill_loss_topk(ops::reshape(logits, {-1, V}), ids, logp, o.kind, o.temperature, o.beta, loss_token_mask(b));
    return mix(student, kd, next_token_loss(logits, b), o, aux);
  };
}

}  // namespace smelt
