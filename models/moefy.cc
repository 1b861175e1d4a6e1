#include "models/moefy.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <tuple>

#include "autograd/grad_mode.h"
#include "ops/ops.h"
#include "runtime/rng.h"

namespace smelt {

void MoefyOptions::validate(const ModelConfig& c, const std::string& source) const {
  SMELT_CHECK(c.num_local_experts == 0, source, ": already an MoE model (", c.num_local_experts, " experts); moefy splits dense FFNs");
  SMELT_CHECK(split == "kmeans" || split == "coact" || split == "random", "--split must be kmeans, coact or random, got \"", split, "\"");
  SMELT_CHECK(shared_neurons >= 0 && shared_neurons < c.intermediate_size, "--shared-neurons must be in [0, ", c.intermediate_size,
              "), got ", shared_neurons);
  const int64_t routed = c.intermediate_size - shared_neurons;
  SMELT_CHECK(experts >= 1 && experts <= routed, "--experts ", experts, " must be between 1 and the ", routed,
              " routed FFN neurons of ", source, " (intermediate_size ", c.intermediate_size, shared_neurons ? " minus --shared-neurons)" : ")");
  SMELT_CHECK(routed % experts == 0, source, ": the ", routed, " routed FFN neurons do not split into ", experts,
              " equal experts; choose --experts dividing ", routed);
  SMELT_CHECK(top_k >= 1 && top_k <= experts, "--top-k ", top_k, " must be between 1 and --experts ", experts);
  SMELT_CHECK(kmeans_iterations >= 1, "k-means needs at least one iteration");
}

std::vector<std::vector<int64_t>> balanced_kmeans(const std::vector<float>& x, int64_t rows, int64_t dims, int64_t groups,
                                                  int64_t iterations, uint64_t seed) {
  SMELT_CHECK(groups >= 1 && rows % groups == 0, "balanced k-means: ", rows, " rows do not split into ", groups, " equal groups");
  const int64_t cap = rows / groups;
  // Start from `groups` distinct rows picked by a seeded shuffle.
  std::vector<int64_t> order(rows);
  std::iota(order.begin(), order.end(), 0);
  Philox rng(seed);
  for (int64_t i = rows - 1; i > 0; --i) std::swap(order[i], order[rng.next_u32() % (i + 1)]);
  std::vector<double> centroid(static_cast<size_t>(groups * dims));
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t d = 0; d < dims; ++d) centroid[g * dims + d] = x[order[g] * dims + d];
  std::vector<int64_t> assign(rows, -1), previous;
  for (int64_t it = 0; it < iterations; ++it) {
    std::vector<std::tuple<double, int64_t, int64_t>> pairs;  // (distance², row, group)
    pairs.reserve(static_cast<size_t>(rows * groups));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t g = 0; g < groups; ++g) {
        double d2 = 0;
        for (int64_t d = 0; d < dims; ++d) {
          const double diff = x[r * dims + d] - centroid[g * dims + d];
          d2 += diff * diff;
        }
        pairs.emplace_back(d2, r, g);
      }
    std::sort(pairs.begin(), pairs.end());  // ties broken by row, then group: deterministic
    std::fill(assign.begin(), assign.end(), -1);
    std::vector<int64_t> fill(groups, 0);
    for (const auto& [d2, r, g] : pairs)
      if (assign[r] < 0 && fill[g] < cap) {
        assign[r] = g;
        ++fill[g];
      }
    if (assign == previous) break;
    previous = assign;
    std::fill(centroid.begin(), centroid.end(), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t d = 0; d < dims; ++d) centroid[assign[r] * dims + d] += x[r * dims + d] / static_cast<double>(cap);
  }
  std::vector<std::vector<int64_t>> out(groups);
  for (int64_t r = 0; r < rows; ++r) out[assign[r]].push_back(r);
  return out;
}

namespace {

// Unit-length rows (k-means then compares directions, not the weights' scale).
void normalise_rows(std::vector<float>& x, int64_t rows, int64_t dims) {
  for (int64_t r = 0; r < rows; ++r) {
    double n = 0;
    for (int64_t d = 0; d < dims; ++d) n += static_cast<double>(x[r * dims + d]) * x[r * dims + d];
    const float inv = n > 0 ? static_cast<float>(1.0 / std::sqrt(n)) : 0.0f;
    for (int64_t d = 0; d < dims; ++d) x[r * dims + d] *= inv;
  }
}

// |activation| of each neuron on each calibration token, neuron-major [F, tokens].
std::vector<float> activation_profiles(const SwiGLUMLP& mlp, const Tensor& inputs) {
  NoGradGuard no_grad;
  const Tensor a = ops::swiglu(ops::linear(inputs, mlp.gate_proj.weight), ops::linear(inputs, mlp.up_proj.weight));  // [N, F]
  return ops::contiguous(ops::transpose(ops::abs(a), 0, 1)).to_vector();
}

Tensor rows_of(const Tensor& w, const std::vector<int64_t>& idx) {
  return ops::contiguous(ops::index_select(w, 0, Tensor::from_ints(idx, {static_cast<int64_t>(idx.size())}, DType::I64, w.device())));
}
Tensor cols_of(const Tensor& w, const std::vector<int64_t>& idx) {
  return ops::contiguous(ops::index_select(w, 1, Tensor::from_ints(idx, {static_cast<int64_t>(idx.size())}, DType::I64, w.device())));
}

}  // namespace

Transformer moefy(const Transformer& dense, const MoefyOptions& o, const std::vector<Tensor>& ffn_inputs, const std::string& source,
                  std::vector<std::vector<std::vector<int64_t>>>* groups_out) {
  const ModelConfig& dc = dense.config();
  o.validate(dc, source);
  const bool needs_data = o.split == "coact" || o.shared_neurons > 0;
  SMELT_CHECK(!needs_data || static_cast<int64_t>(ffn_inputs.size()) == dc.num_hidden_layers,
              (o.split == "coact" ? "--split coact" : "--shared-neurons"), " needs calibration data (--data)");
  ModelConfig c = dc;
  c.num_local_experts = o.experts;
  c.num_experts_per_tok = o.top_k;
  c.decoder_sparse_step = 1;
  c.moe_intermediate_size = (dc.intermediate_size - o.shared_neurons) / o.experts;
  c.scoring_func = "softmax";
  c.norm_topk_prob = false;
  c.routed_scaling_factor = o.unit_weights ? 1.0 : static_cast<double>(o.experts);
  c.routed_weights = o.unit_weights ? "unit" : "scores";
  c.routing = "token_choice";
  c.capacity_factor = 0;
  c.shared_expert_intermediate_size = o.shared_neurons;
  c.shared_expert_gate = false;
  c.validate();

  NoGradGuard no_grad;
  const bool qwen = o.shared_neurons > 0;
  NamedTensors tensors;
  for (const auto& [name, t] : dense.state_dict())
    if (name.find(".mlp.") == std::string::npos) tensors.push_back({name, t});
  const int64_t F = dc.intermediate_size, C = dc.hidden_size;
  for (int64_t l = 0; l < dc.num_hidden_layers; ++l) {
    const SwiGLUMLP& mlp = dense.layer(static_cast<size_t>(l)).mlp;
    std::vector<float> profile;
    if (needs_data) profile = activation_profiles(mlp, ffn_inputs[l]);
    const int64_t tokens = needs_data ? ffn_inputs[l].size(0) : 0;
    // Shared neurons: the most active on the calibration data.
    std::vector<int64_t> neurons(F), shared;
    std::iota(neurons.begin(), neurons.end(), 0);
    if (o.shared_neurons > 0) {
      std::vector<double> mean(F, 0.0);
      for (int64_t f = 0; f < F; ++f)
        for (int64_t n = 0; n < tokens; ++n) mean[f] += profile[f * tokens + n];
      std::stable_sort(neurons.begin(), neurons.end(), [&](int64_t a, int64_t b) { return mean[a] > mean[b]; });
      shared.assign(neurons.begin(), neurons.begin() + o.shared_neurons);
      neurons.erase(neurons.begin(), neurons.begin() + o.shared_neurons);
      std::sort(shared.begin(), shared.end());
      std::sort(neurons.begin(), neurons.end());
    }
    const int64_t R = static_cast<int64_t>(neurons.size());
    std::vector<std::vector<int64_t>> local;  // indices into `neurons`
    if (o.split == "random") {
      std::vector<int64_t> perm(R);
      std::iota(perm.begin(), perm.end(), 0);
      Philox rng(o.seed + static_cast<uint64_t>(l));
      for (int64_t i = R - 1; i > 0; --i) std::swap(perm[i], perm[rng.next_u32() % (i + 1)]);
      const int64_t size = R / o.experts;
      for (int64_t e = 0; e < o.experts; ++e) {
        std::vector<int64_t> g(perm.begin() + e * size, perm.begin() + (e + 1) * size);
        std::sort(g.begin(), g.end());
        local.push_back(g);
      }
    } else {
      // kmeans: each neuron's gate and up weight rows, side by side; coact: its |activation| on
      // every calibration token, so neurons that fire together share an expert.
      const int64_t dims = o.split == "coact" ? tokens : 2 * C;
      std::vector<float> features(static_cast<size_t>(R * dims));
      const std::vector<float> gate = mlp.gate_proj.weight.to_vector(), up = mlp.up_proj.weight.to_vector();
      for (int64_t i = 0; i < R; ++i) {
        const int64_t f = neurons[i];
        if (o.split == "coact") {
          std::copy(profile.begin() + f * tokens, profile.begin() + (f + 1) * tokens, features.begin() + i * dims);
        } else {
          std::copy(gate.begin() + f * C, gate.begin() + (f + 1) * C, features.begin() + i * dims);
          std::copy(up.begin() + f * C, up.begin() + (f + 1) * C, features.begin() + i * dims + C);
        }
      }
      normalise_rows(features, R, dims);
      local = balanced_kmeans(features, R, dims, o.experts, o.kmeans_iterations, o.seed + static_cast<uint64_t>(l));
    }
    std::vector<std::vector<int64_t>> layer_groups;
    const std::string p = "model.layers." + std::to_string(l) + (qwen ? ".mlp." : ".block_sparse_moe.");
    for (int64_t e = 0; e < o.experts; ++e) {
      std::vector<int64_t> idx;
      for (int64_t i : local[e]) idx.push_back(neurons[i]);
      const std::string ex = p + "experts." + std::to_string(e) + ".";
      tensors.push_back({ex + (qwen ? "gate_proj" : "w1") + ".weight", rows_of(mlp.gate_proj.weight, idx)});
      tensors.push_back({ex + (qwen ? "up_proj" : "w3") + ".weight", rows_of(mlp.up_proj.weight, idx)});
      tensors.push_back({ex + (qwen ? "down_proj" : "w2") + ".weight", cols_of(mlp.down_proj.weight, idx)});
      layer_groups.push_back(idx);
    }
    if (qwen) {
      tensors.push_back({p + "shared_expert.gate_proj.weight", rows_of(mlp.gate_proj.weight, shared)});
      tensors.push_back({p + "shared_expert.up_proj.weight", rows_of(mlp.up_proj.weight, shared)});
      tensors.push_back({p + "shared_expert.down_proj.weight", cols_of(mlp.down_proj.weight, shared)});
    }
    tensors.push_back({p + "gate.weight", Tensor::zeros({o.experts, C}, DType::F32, mlp.gate_proj.weight.device())});  // uniform scores: every weight 1
    if (groups_out) groups_out->push_back(layer_groups);
  }
  return Transformer::from_tensors(c, tensors, "moefy of " + source);
}

}  // namespace smelt
