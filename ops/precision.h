// The arithmetic of training's GEMMs: f32, or bf16 operands with f32 accumulation (a recipe's
// train "precision": "bf16"). Set for the extent of a scope (a training step, an evaluation) and
// read by the devices' matmul, expert and LM-head kernels as they build their GEMMs. Weights,
// gradients, the optimiser's master copies and moments, norms, softmax, attention's products and
// the losses stay f32; only the GEMM operands are rounded (to nearest even) as they are packed.
#pragma once
#include <string>

namespace smelt {

enum class MatmulPrecision { F32, BF16 };

MatmulPrecision matmul_precision();
// Whether the GEMMs being built now round their operands to bf16 (the current precision is bf16).
inline bool matmuls_in_bf16() { return matmul_precision() == MatmulPrecision::BF16; }
const char* matmul_precision_name(MatmulPrecision p);
// "f32" or "bf16"; anything else fails naming `where` (a recipe field, an option).
MatmulPrecision parse_matmul_precision(const std::string& name, const std::string& where);

class MatmulPrecisionScope {
 public:
  explicit MatmulPrecisionScope(MatmulPrecision p);
  ~MatmulPrecisionScope();
  MatmulPrecisionScope(const MatmulPrecisionScope&) = delete;
  MatmulPrecisionScope& operator=(const MatmulPrecisionScope&) = delete;

 private:
  MatmulPrecision previous_;
};

}  // namespace smelt
