// Central finite-difference gradient check. The output is projected onto a fixed random
// direction w, L = Σ out⊙w (accumulated in double); the analytic dL/dx from backward must match
// (L(x + ε e_j) − L(x − ε e_j)) / 2ε for every element j of every input that requires grad.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace smelt {

struct GradcheckOptions {
  float eps = 1e-2f;    // f32 step: truncation error O(ε²) vs round-off O(ulp·|L|/ε)
  double atol = 1e-3;
  double rtol = 1e-2;
  uint64_t seed = 1234;
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0;
  int64_t checked = 0;
  std::string first_failure;  // "input 1 element 7: analytic 0.12 numeric 0.31"
};

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& options = {});

}  // namespace smelt
