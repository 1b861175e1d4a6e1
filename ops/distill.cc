#include "ops/distill.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "ops/ops.h"

namespace smelt::ops {
namespace {

// Mean of per-row values over rows whose weight is positive, times `scale`.
Tensor weighted_mean(const Tensor& rows, const Tensor& row_weight, double scale) {
  if (!row_weight.defined()) return mul(mean(rows), static_cast<float>(scale));
  SMELT_CHECK(row_weight.numel() == rows.numel(), "distill: row_weight has ", row_weight.numel(), " entries for ", rows.numel(), " rows");
  std::vector<float> w = row_weight.to_vector();
  double total = 0;
  for (float& v : w) {
    v = v > 0 ? 1.0f : 0.0f;
    total += v;
  }
  if (total == 0) return mul(sum(rows), 0.0f);  // nothing to learn from in this batch
  const Tensor mask = Tensor::from_vector(w, rows.shape());
  return mul(sum(mul(rows, mask)), static_cast<float>(scale / total));
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
  const int64_t N = teacher_logp.size(0), K = teacher_logp.size(1);
  // Teacher buckets: its K log-probabilities and the log of the mass left over.
  std::vector<float> lt(N * (K + 1));
  {
    const std::vector<float> top = teacher_logp.to_vector();
    for (int64_t n = 0; n < N; ++n) {
      double mass = 0;
      for (int64_t k = 0; k < K; ++k) {
        lt[n * (K + 1) + k] = top[n * K + k];
        mass += std::exp(static_cast<double>(top[n * K + k]));
      }
      lt[n * (K + 1) + K] = static_cast<float>(std::log(std::max(1.0 - mass, 1e-12)));
    }
  }
  const Tensor teacher = Tensor::from_vector(lt, {N, K + 1});
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
    // Relative error: the teacher's weighted squared norm is a constant of the batch.
    std::vector<float> tn = sum(mul(t, t), {1}).to_vector();
    std::vector<float> w = row_weight.defined() ? row_weight.to_vector() : std::vector<float>(tn.size(), 1.0f);
    double total = 0, rows = 0;
    for (size_t i = 0; i < tn.size(); ++i)
      if (w[i] > 0) total += tn[i], rows += 1;
    if (rows == 0 || total == 0) return mul(sum(d), 0.0f);
    return weighted_mean(sum(mul(d, d), {1}), row_weight, rows / total);
  }
  SMELT_CHECK(kind == HiddenLoss::Cosine, "hidden-state loss: no loss kind given");
  const float eps = 1e-12f;
  const Tensor dot = sum(mul(s, t), {1});
  const Tensor norms = mul(sqrt(add(sum(mul(s, s), {1}), eps)), sqrt(add(sum(mul(t, t), {1}), eps)));
  return weighted_mean(add(neg(div(dot, norms)), 1.0f), row_weight, 1.0);
}

}  // namespace smelt::ops
