// MoEfication, stage 1's construction (LaDiMo, MoEfication): a dense SwiGLU FFN is a sum over its
// intermediate neurons, down[:, i] · silu(gate[i] · x) · (up[i] · x), so splitting the neurons
// into E equal groups gives E experts whose sum is exactly the dense FFN. The MoE layers made
// here score with softmax, do not renormalise the chosen weights, and scale them by E
// (routed_scaling_factor): with the router at zero every expert's weight is exactly 1/E · E = 1,
// so a token routed to all E experts gets the dense output, and one routed to k gets the sum of
// those k experts (MoEfication's unweighted sum) until training moves the router.
#pragma once
#include <string>
#include <vector>

#include "models/transformer.h"

namespace smelt {

struct MoefyOptions {
  int64_t experts = 8;
  int64_t top_k = 2;
  std::string split = "kmeans";  // "kmeans" (neuron weights), "coact" (co-activation on calibration data), "random"
  int64_t shared_neurons = 0;    // the most active neurons kept as an always-on shared expert
  uint64_t seed = 0;
  int64_t kmeans_iterations = 25;
  // Routers only select; chosen experts' outputs are summed with weight 1 (routed_weights
  // "unit"): every expert chosen reproduces the dense FFN whatever the router learns. Off: the
  // outputs are weighted by E · softmax(router), exact only while the router is uniform.
  bool unit_weights = false;
  void validate(const ModelConfig& dense, const std::string& source) const;
};

// Partitions `rows` feature vectors ([rows, dims], row-major) into `groups` groups of equal size
// (rows must be a multiple of groups): balanced k-means — each round assigns (row, centroid)
// pairs nearest first while a group has room, then moves the centroids. Deterministic for a
// seed. Returns each group's row indices in increasing order.
std::vector<std::vector<int64_t>> balanced_kmeans(const std::vector<float>& features, int64_t rows, int64_t dims, int64_t groups,
                                                  int64_t iterations, uint64_t seed);

// The MoE model. `ffn_inputs[l]` ([tokens, hidden], may be empty when unused) is what layer l's
// FFN saw on calibration data: needed for split "coact" and for shared neurons (ranked by mean
// |activation|). The neuron groups of each layer are returned in `groups` when not null.
Transformer moefy(const Transformer& dense, const MoefyOptions& options, const std::vector<Tensor>& ffn_inputs,
                  const std::string& source, std::vector<std::vector<std::vector<int64_t>>>* groups = nullptr);

}  // namespace smelt
