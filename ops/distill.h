// Distillation losses between a teacher's and a student's next-token distributions.
//   fkl  forward KL   KL(p_t ‖ p_s)          mode-covering (the classic Hinton loss)
//   rkl  reverse KL   KL(p_s ‖ p_t)          mode-seeking
//   jsd  generalised Jensen–Shannon: β KL(p_t ‖ m) + (1−β) KL(p_s ‖ m), m = β p_t + (1−β) p_s
//   skl  skew KL      KL(p_t ‖ β p_t + (1−β) p_s)   (DistiLLM; stays finite where p_s → 0)
//   tvd  total variation ½ Σ |p_t − p_s|
// Both distributions are softmax(logits / T). KL-type losses are multiplied by T² so their
// gradients keep their size across temperatures (Hinton et al.); TVD is bounded and is not.
// Gradients flow to the student only. The top-K form takes, per position, the teacher's K most
// likely token ids and their log-probabilities (a cache written once) and compares the two
// distributions over K + 1 buckets: those K tokens and "everything else", which is exact for
// the K tokens and keeps both sides normalised.
#pragma once
#include <string>

#include "runtime/tensor.h"

namespace smelt::ops {

enum class Divergence { ForwardKL, ReverseKL, JensenShannon, SkewKL, TotalVariation };

// "fkl", "rkl", "jsd", "skl", "tvd"; throws naming the unknown one.
Divergence parse_divergence(const std::string& name);
std::string divergence_name(Divergence d);
// β of jsd and skl when none is given (0.5 and 0.1).
double default_beta(Divergence d);

// Per-row divergence [N] between teacher and student log-probabilities over the same buckets [N, B].
Tensor divergence_rows(const Tensor& teacher_logp, const Tensor& student_logp, Divergence kind, double beta);

// Mean over rows with row_weight > 0 (undefined: all rows) of the divergence at temperature T.
// student_logits [N, V] (with grad), teacher_logits [N, V].
Tensor distill_loss(const Tensor& student_logits, const Tensor& teacher_logits, Divergence kind, double temperature, double beta,
                    const Tensor& row_weight = Tensor());
// The same against a top-K teacher: teacher_ids [N, K] (integers), teacher_logp [N, K] = the
// teacher's log-probabilities at temperature T for those ids.
Tensor distill_loss_topk(const Tensor& student_logits, const Tensor& teacher_ids, const Tensor& teacher_logp, Divergence kind,
                         double temperature, double beta, const Tensor& row_weight = Tensor());

// Hidden-state matching between a student's and a teacher's residual streams, rows [N, C] of the
// same width (a learned projection in front of the student handles different widths):
//   mse     Σ_rows ‖s − t‖² / Σ_rows ‖t‖²  (relative squared error, so layers whose residual
//           streams differ in scale weigh alike and the loss sits on the cross-entropy's scale)
//   cosine  mean over rows of 1 − cos(s, t)
// over rows with row_weight > 0 (undefined: all rows). Gradients flow to the student only.
enum class HiddenLoss { None, MSE, Cosine };
HiddenLoss parse_hidden_loss(const std::string& name);  // "mse", "cosine"
std::string hidden_loss_name(HiddenLoss kind);
Tensor hidden_state_loss(const Tensor& student, const Tensor& teacher, HiddenLoss kind, const Tensor& row_weight = Tensor());

}  // namespace smelt::ops
