// The distillation side of smelt train (smelt distill): the options checked before any work,
// recorded in the recipe for --resume, and turned into the run's loss (online teacher, or the
// cache of its top-K predictions).
#pragma once
#include <memory>
#include <optional>
#include <string>

#include "io/json_reader.h"
#include "models/transformer.h"
#include "optim/distill.h"
#include "tools/data_source.h"
#include "tools/runners.h"

namespace smelt::tools {

// --student-init teacher: the student starts from a subset of the teacher's layers.
inline bool init_from_teacher(const TrainArgs& a) { return a.student_init == "teacher"; }

// The distillation settings as the recipe's "distill" section: checkpoints carry them, so
// --resume needs no options repeated.
json distill_settings(const TrainArgs& a);

// Fills the distillation fields of `a` from a recipe's "distill" section. When the command line
// names a teacher too, both must agree (a resumed run cannot switch objectives silently).
void apply_distill_settings(const json& section, const std::string& source, TrainArgs& a);

// Checks a distillation run before any work: options, and (unless a cache replaces it) that the
// teacher shares the student's vocabulary and the data's tokenizer. Reads only the teacher's
// config.json and tokenizer.json.
void check_distillation(const TrainArgs& a, const TrainingData& data, const ModelConfig& student);

struct Distillation {
  LossFn loss;
  HiddenMatch hidden;  // its projection is trained beside the student
};

// The distillation objective of a run, or none. With --teacher-topk the teacher runs once to
// fill the cache (unless a matching cache exists) and is freed (`teacher` reset) before training.
std::optional<Distillation> distillation(const TrainArgs& a, const TrainingData& data, const TrainConfig& tc, const ModelConfig& student,
                                         std::shared_ptr<const Transformer>& teacher, Device device);

}  // namespace smelt::tools
