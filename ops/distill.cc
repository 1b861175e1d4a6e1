#include "ops/distill.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "ops/ops.h"

namespace smelt::ops {
namespace {

// 1 for rows whose weight is positive, else 0, shaped like `rows` (all 1 without weights).
Tensor row_mask(const Tensor& rows, const Tensor& row_weight) {
  if (!row_weight.defined()) return Tensor::ones(rows.shape(), rows.device());
  SMELT_CHECK(row_weight.numel() == rows.numel(), "distill: row_weight has ", row_weight.numel(), " entries for ", rows.numel(), " rows");
  return positive(reshape(row_weight.detach(), rows.shape()));
}

// Mean of per-row values over rows whose weight is positive, times `scale`: all on the device
// (0 when no row counts: the masked sum is 0, divided by max(count, 1)).
Tensor weighted_mean(const Tensor& rows, const Tensor& row_weight, double scale) {
  if (!row_weight.defined()) return mul(mean(rows), static_cast<float>(scale));
  const Tensor mask = row_mask(rows, row_weight);
  return mul(div(sum(mul(rows, mask)), clamp_min(sum(mask), 1.0f)), static_cast<float>(scale));
}

double temperature_scale(Divergence kind, double T) { return kind == Divergence::TotalVariation ? 1.0 : T * T; }

}  // namespace

Divergence parse_divergence(const std::string& name) {
  if (name == "fkl") return Divergence::ForwardKL;
  if (name == "rkl") return Divergence::ReverseKL;
  if (name == "jsd") return Divergence::JensenShannon;
  if (name == "skl") return Divergence::SkewKL;
  if (name == "tvd") return Divergence::TotalVariation;
  SMELT_FAIL("unknown distillation loss \"", name, "\" (known: fkl, rkl, jsd, skl, tvd)");
}

std::string divergence_name(Divergence d) {
  switch (d) {
    case Divergence::ForwardKL: return "fkl";
    case Divergence::ReverseKL: return "rkl";
    case Divergence::JensenShannon: return "jsd";
    case Divergence::SkewKL: return "skl";
    case Divergence::TotalVariation: return "tvd";
  }
  return "?";
}

double default_beta(Divergence d) { return d == Divergence::SkewKL ? 0.1 : 0.5; }

Tensor divergence_rows(const Tensor& lt, const Tensor& ls, Divergence kind, double beta) {
  SMELT_CHECK(lt.shape() == ls.shape() && lt.dim() == 2, "distill: teacher ", lt.str(), " and student ", ls.str(),
              " log-probabilities must both be [rows, buckets]");
  SMELT_CHECK(beta > 0 && beta < 1, "distill: beta must be in (0, 1), got ", beta);
  const Tensor pt = exp(lt), ps = exp(ls);
  const auto b = static_cast<float>(beta);
  switch (kind) {
    case Divergence::ForwardKL: return sum(mul(pt, sub(lt, ls)), {1});
    case Divergence::ReverseKL: return sum(mul(ps, sub(ls, lt)), {1});
    case Divergence::JensenShannon: {
      const Tensor lm = log(add(mul(pt, b), mul(ps, 1.0f - b)));
      return add(mul(sum(mul(pt, sub(lt, lm)), {1}), b), mul(sum(mul(ps, sub(ls, lm)), {1}), 1.0f - b));
    }
    case Divergence::SkewKL: {
      const Tensor lm = log(add(mul(pt, b), mul(ps, 1.0f - b)));
      return sum(mul(pt, sub(lt, lm)), {1});
    }
    case Divergence::TotalVariation: return mul(sum(abs(sub(pt, ps)), {1}), 0.5f);
  }
  SMELT_FAIL("distill: unhandled divergence");
}

Tensor distill_loss(const Tensor& student_logits, const Tensor& teacher_logits, Divergence kind, double temperature, double beta,
                    const Tensor& row_weight) {
  SMELT_CHECK(temperature > 0, "distill: temperature must be positive, got ", temperature);
  SMELT_CHECK(student_logits.shape() == teacher_logits.shape() && student_logits.dim() == 2, "distill: student ", student_logits.str(),
              " and teacher ", teacher_logits.str(), " logits must both be [rows, vocabulary]");
  const float inv_t = static_cast<float>(1.0 / temperature);
  Tensor lt;
  {
    NoGradGuard no_grad;  // the teacher is a fixed target
    lt = log_softmax(mul(teacher_logits, inv_t));
  }
  const Tensor ls = log_softmax(mul(student_logits, inv_t));
  return weighted_mean(divergence_rows(lt, ls, kind, beta), row_weight, temperature_scale(kind, temperature));
}

Tensor distill_loss_topk(const Tensor& student_logits, const Tensor& teacher_ids, const Tensor& teacher_logp, Divergence kind,
                         double temperature, double beta, const Tensor& row_weight) {
  SMELT_CHECK(temperature > 0, "distill: temperature must be positive, got ", temperature);
  SMELT_CHECK(student_logits.dim() == 2 && teacher_ids.dim() == 2 && teacher_ids.shape() == teacher_logp.shape() &&
                  teacher_ids.size(0) == student_logits.size(0),
              "distill: student logits ", student_logits.str(), ", teacher ids ", teacher_ids.str(), " and log-probabilities ",
              teacher_logp.str(), " do not match ([N, V], [N, K], [N, K])");
  // Teacher buckets: its K log-probabilities and the log of the mass left over (a fixed target).
  Tensor teacher;
  {
    NoGradGuard no_grad;
    const Tensor top = teacher_logp.detach();
    const Tensor left = log(clamp_min(add(neg(sum(exp(top), {1}, true)), 1.0f), 1e-12f));
    teacher = cat({top, left}, 1);
  }
  // Student buckets: log-probabilities of the teacher's K tokens, and of everything else.
  const Tensor ls_full = log_softmax(mul(student_logits, static_cast<float>(1.0 / temperature)));
  const Tensor ls_k = gather(ls_full, 1, teacher_ids.dtype() == DType::I64 ? teacher_ids : teacher_ids.to(DType::I64));
  const Tensor rest = log(add(neg(sum(exp(ls_k), {1}, true)), 1.0f + 1e-6f));
  const Tensor student = cat({ls_k, rest}, 1);
  return weighted_mean(divergence_rows(teacher, student, kind, beta), row_weight, temperature_scale(kind, temperature));
}

HiddenLoss parse_hidden_loss(const std::string& name) {
  if (name == "mse") return HiddenLoss::MSE;
  if (name == "cosine") return HiddenLoss::Cosine;
  SMELT_FAIL("unknown hidden-state loss \"", name, "\" (known: mse, cosine)");
}

std::string hidden_loss_name(HiddenLoss kind) {
  return kind == HiddenLoss::MSE ? "mse" : kind == HiddenLoss::Cosine ? "cosine" : "none";
}

Tensor hidden_state_loss(const Tensor& s, const Tensor& t_in, HiddenLoss kind, const Tensor& row_weight) {
  SMELT_CHECK(s.dim() == 2 && s.shape() == t_in.shape(), "hidden-state loss: student ", s.str(), " and teacher ", t_in.str(),
              " must both be [rows, width]");
  const Tensor t = t_in.detach();
  if (kind == HiddenLoss::MSE) {
    const Tensor d = sub(s, t);
    // Relative error Σ m‖s − t‖² / Σ m‖t‖² over counted rows m: the teacher's part is a constant
    // of the batch. 0 when nothing counts or the teacher is all zeros.
    const Tensor tn = sum(mul(t, t), {1});
    const Tensor mask = row_mask(tn, row_weight);
    const Tensor total = sum(mul(tn, mask));
    return div(mul(sum(mul(sum(mul(d, d), {1}), mask)), positive(total)), clamp_min(total, 1e-30f));
  }
  SMELT_CHECK(kind == HiddenLoss::Cosine, "hidden-state loss: no loss kind given");
  const float eps = 1e-12f;
  const Tensor dot = sum(mul(s, t), {1});
  const Tensor norms = mul(sqrt(add(sum(mul(s, s), {1}), eps)), sqrt(add(sum(mul(t, t), {1}), eps)));
  return weighted_mean(add(neg(div(dot, norms)), 1.0f), row_weight, 1.0);
}

}  // namespace smelt::ops
