// A smaller dense student made from a teacher's layers, for distillation: the student keeps the
// teacher's width and takes a subset of its layers (attention, norms and FFN copied), its
// embeddings, final norm and LM head. An MoE layer's experts are merged into one dense FFN by
// averaging each projection over the experts: under renormalised top-k routing the MoE output
// is a convex combination of expert outputs, and the composed/upcycled experts this framework
// makes descend from one FFN, so their mean is a close starting point (exact when the experts
// are equal). An ungated shared expert is kept beside the merged experts (student
// intermediate_size = expert width + shared width).
#pragma once
#include <vector>

#include "models/transformer.h"

namespace smelt {

// Student layer i ← teacher layer evenly_spaced_layers(Lt, Ls)[i]: Ls indices spread from the
// first to the last teacher layer (the first only when Ls = 1).
std::vector<int64_t> evenly_spaced_layers(int64_t teacher_layers, int64_t student_layers);

// The student config must be dense with the teacher's vocabulary, width, heads and per-layer FFN
// width (expert width, plus the shared expert's); `layers` are distinct teacher layer indices in
// increasing order, one per student layer. `teacher_name` names the teacher in errors.
Transformer student_from_teacher(const Transformer& teacher, const ModelConfig& student, const std::vector<int64_t>& layers,
                                 const std::string& teacher_name);

}  // namespace smelt
