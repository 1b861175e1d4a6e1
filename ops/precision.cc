#include "ops/precision.h"

#include <atomic>

#include "runtime/error.h"

namespace smelt {
namespace {
// Process-wide, not per thread: the ops read it on the thread that launches them, and a pool's
// workers must see what the step that runs them set.
std::atomic<MatmulPrecision> current{MatmulPrecision::F32};
}  // namespace

MatmulPrecision matmul_precision() { return current.load(std::memory_order_relaxed); }

const char* matmul_precision_name(MatmulPrecision p) { return p == MatmulPrecision::BF16 ? "bf16" : "f32"; }

MatmulPrecision parse_matmul_precision(const std::string& name, const std::string& where) {
  if (name == "f32") return MatmulPrecision::F32;
  if (name == "bf16") return MatmulPrecision::BF16;
  SMELT_FAIL(where, " must be \"f32\" or \"bf16\", got \"", name, "\"");
}

MatmulPrecisionScope::MatmulPrecisionScope(MatmulPrecision p) : previous_(current.exchange(p)) {}
MatmulPrecisionScope::~MatmulPrecisionScope() { current.store(previous_); }

}  // namespace smelt
