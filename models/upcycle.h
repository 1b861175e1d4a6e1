// Sparse upcycling (Komatsuzaki et al., 2022): a dense model becomes an MoE model whose MoE
// layers hold E copies of the dense FFN. With noise 0 the MoE reproduces the dense model before
// any training: the router starts at zero, so every expert scores the same and the renormalised
// top-k weights sum to exactly 1 over identical experts; shared experts (copies too) and the
// routed part each carry a 1/(S+1) share of the down projection, so their sum is the dense FFN.
#pragma once
#include "models/transformer.h"

namespace smelt {

struct UpcycleOptions {
  int64_t experts = 8;
  int64_t top_k = 2;
  int64_t every = 1;           // every n-th layer becomes MoE (decoder_sparse_step)
  double noise = 0.0;          // std of Gaussian noise, relative to each weight matrix's std, to break symmetry
  int64_t shared_experts = 0;  // copies of the dense FFN that every token uses
  uint64_t seed = 0;
  std::string scoring_func = "softmax";
  void validate() const;
};

Transformer upcycle(const Transformer& dense, const UpcycleOptions& options);

}  // namespace smelt
