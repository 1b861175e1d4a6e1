#include "optim/distill.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "ops/ops.h"

namespace smelt {
namespace {

// alpha · kd + (1 − alpha) · ce, then the student's balancing loss.
Tensor mix(const Transformer& student, const Tensor& kd, const Tensor& ce, const DistillOptions& o, Tensor* aux) {
  const Tensor loss = ops::add(ops::mul(kd, static_cast<float>(o.alpha)), ops::mul(ce, static_cast<float>(1.0 - o.alpha)));
  return with_auxiliary_loss(student, loss, aux);
}

// Mean over the matched layers of the hidden-state loss; both models' captures are from the
// forward just run.
Tensor hidden_term(const Transformer& student, const Transformer& teacher, const HiddenMatch& match, const DistillOptions& o,
                   const Tensor& token_mask) {
  const auto& s = student.captured().block_output;
  const auto& t = teacher.captured().block_output;
  Tensor total;
  for (size_t i = 0; i < s.size(); ++i) {
    Tensor hs = ops::reshape(s[i], {-1, s[i].size(-1)});
    if (match.projection.defined()) hs = ops::linear(hs, match.projection);
    const Tensor& ht = t[static_cast<size_t>(match.teacher_layer[i])];
    const Tensor term = ops::hidden_state_loss(hs, ops::reshape(ht, {-1, ht.size(-1)}), o.hidden, token_mask);
    total = total.defined() ? ops::add(total, term) : term;
  }
  return ops::mul(total, static_cast<float>(o.hidden_weight / static_cast<double>(s.size())));
}

}  // namespace

void DistillOptions::validate() const {
  SMELT_CHECK(temperature > 0, "--temperature must be positive, got ", temperature);
  SMELT_CHECK(alpha >= 0 && alpha <= 1, "--alpha must be in [0, 1], got ", alpha);
  SMELT_CHECK(beta > 0 && beta < 1, "--beta must be in (0, 1), got ", beta);
  SMELT_CHECK(hidden_weight >= 0 && std::isfinite(hidden_weight), "--hidden-weight must be ≥ 0, got ", hidden_weight);
}

HiddenMatch HiddenMatch::create(const ModelConfig& teacher, const ModelConfig& student, uint64_t seed, Device device) {
  HiddenMatch m;
  const int64_t lt = teacher.num_hidden_layers, ls = student.num_hidden_layers;
  for (int64_t i = 0; i < ls; ++i)
    m.teacher_layer.push_back(std::max<int64_t>(0, std::llround(static_cast<double>((i + 1) * lt) / static_cast<double>(ls)) - 1));
  if (teacher.hidden_size != student.hidden_size) {
    Philox rng(seed ^ 0x9e0cec7104ULL);
    m.projection = Tensor::randn({teacher.hidden_size, student.hidden_size}, rng, 0.0f,
                                 1.0f / std::sqrt(static_cast<float>(student.hidden_size)), device);
    m.projection.set_requires_grad(true);
  }
  return m;
}

NamedTensors HiddenMatch::parameters() const {
  if (!projection.defined()) return {};
  return {{"distill.hidden_projection", projection}};
}

LossFn online_distill_loss(std::shared_ptr<const Transformer> teacher, DistillOptions o, HiddenMatch hidden) {
  o.validate();
  const bool match_hidden = o.hidden != ops::HiddenLoss::None;
  SMELT_CHECK(!match_hidden || hidden.teacher_layer.size() > 0, "distill: a hidden-state loss needs a layer map");
  return [teacher, o, hidden, match_hidden](const Transformer& student, const Batch& b, Tensor* aux) {
    student.set_capture(match_hidden);
    const Tensor logits = forward_logits(student, b);
    const int64_t V = logits.size(-1);
    const Tensor mask = loss_token_mask(b);
    Tensor teacher_logits, hidden_loss;
    {
      NoGradGuard no_grad;
      teacher->set_capture(match_hidden);
      teacher_logits = ops::reshape(teacher->forward(b.ids, nullptr, Tensor(), b.key_start), {-1, V});
    }
    if (match_hidden) {
      hidden_loss = hidden_term(student, *teacher, hidden, o, mask);
      student.set_capture(false);  // drop the captured activations now, not at the next forward
      teacher->set_capture(false);
    }
    const Tensor kd = ops::distill_loss(ops::reshape(logits, {-1, V}), teacher_logits, o.kind, o.temperature, o.beta, mask);
    const Tensor loss = mix(student, kd, next_token_loss(logits, b), o, aux);
    return match_hidden ? ops::add(loss, hidden_loss) : loss;
  };
}

LossFn cached_distill_loss(TeacherLookup lookup, DistillOptions o) {
  o.validate();
  SMELT_CHECK(o.hidden == ops::HiddenLoss::None, "a hidden-state loss needs the teacher online: the top-K cache holds only its predictions");
  return [lookup, o](const Transformer& student, const Batch& b, Tensor* aux) {
    SMELT_CHECK(!b.starts.empty(), "distill: the batch does not say where its windows start (needed to find cached predictions)");
    const Tensor logits = forward_logits(student, b);
    const int64_t V = logits.size(-1);
    Tensor ids, logp;
    lookup(b.starts, ids, logp);  // read from the cache on the host
    ids = ids.to(logits.device());
    logp = logp.to(logits.device());
    const Tensor kd = ops::distill_loss_topk(ops::reshape(logits, {-1, V}), ids, logp, o.kind, o.temperature, o.beta, loss_token_mask(b));
    return mix(student, kd, next_token_loss(logits, b), o, aux);
  };
}

}  // namespace smelt
