// Distillation objectives for the training loop: the student minimises
//   alpha · divergence(teacher, student; T) + (1 − alpha) · next-token cross-entropy
//   + hidden_weight · hidden-state loss (optional) + its own MoE balancing loss
// over the tokens that carry loss. The teacher is either a model run frozen and without
// gradients on the same batch, or a cache of its top-K predictions for the batch's windows
// (written and read by io/teacher_cache.h, which tools/ hands in as a lookup function), so no
// teacher is in memory.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "ops/distill.h"
#include "optim/trainer.h"

namespace smelt {

struct DistillOptions {
  ops::Divergence kind = ops::Divergence::ForwardKL;
  double temperature = 1.0;
  double alpha = 0.5;  // weight of the distillation term; 1 − alpha on the data's next tokens
  double beta = 0.5;   // jsd mixture / skl skew
  ops::HiddenLoss hidden = ops::HiddenLoss::None;
  double hidden_weight = 1.0;
  void validate() const;
};

// Hidden-state matching: student layer i's block output against teacher layer teacher_layer[i]'s,
// through `projection` ([teacher width, student width], trained with the student) when the widths
// differ. Layers are matched by depth: round((i + 1) · Lt / Ls) − 1, so the last matches the last.
struct HiddenMatch {
  std::vector<int64_t> teacher_layer;
  Tensor projection;  // undefined when the widths agree
  // The layer map and, when widths differ, a projection ~ N(0, 1/student width) from `seed`, on
  // the device the student trains on.
  static HiddenMatch create(const ModelConfig& teacher, const ModelConfig& student, uint64_t seed, Device device = Device::cpu());
  // What the optimizer trains besides the student (and checkpoints keep): the projection, if any.
  NamedTensors parameters() const;
};

// `hidden` is used when options.hidden is not None.
LossFn online_distill_loss(std::shared_ptr<const Transformer> teacher, DistillOptions options, HiddenMatch hidden = {});
// The cached teacher's predictions for the windows starting at `starts`: ids [B·T, K] (I64) and
// logp [B·T, K] (TeacherCache::lookup).
using TeacherLookup = std::function<void(const std::vector<int64_t>& starts, Tensor& ids, Tensor& logp)>;
LossFn cached_distill_loss(TeacherLookup lookup, DistillOptions options);

}  // namespace smelt
