// Distillation objectives for the training loop: the student minimises
//   alpha · divergence(teacher, student; T) + (1 − alpha) · next-token cross-entropy
// (plus its own MoE balancing loss), over the tokens that carry loss. The teacher is either a
// model run frozen and without gradients on the same batch, or a cache of its top-K predictions
// for the batch's windows (io/teacher_cache.h), so no teacher is in memory.
#pragma once
#include <memory>

#include "io/teacher_cache.h"
#include "ops/distill.h"
#include "optim/trainer.h"

namespace smelt {

struct DistillOptions {
  ops::Divergence kind = ops::Divergence::ForwardKL;
  double temperature = 1.0;
  double alpha = 0.5;  // weight of the distillation term; 1 − alpha on the data's next tokens
  double beta = 0.5;   // jsd mixture / skl skew
  void validate() const;
};

LossFn online_distill_loss(std::shared_ptr<const Transformer> teacher, DistillOptions options);
LossFn cached_distill_loss(std::shared_ptr<const TeacherCache> cache, DistillOptions options);

}  // namespace smelt
