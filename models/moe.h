// The sparse Mixture-of-Experts feed-forward block: a router (linear → softmax or sigmoid →
// top-k, or expert choice), SwiGLU experts run by one dropless grouped dispatch (ops::moe_ffn),
// an optional always-on shared expert, load balancing (Switch aux loss, z-loss, or DeepSeek-V3
// bias balancing) and per-step routing statistics.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "models/config.h"
#include "ops/moe.h"
#include "runtime/communicator.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace smelt {

struct SwiGLUMLP;

// How many experts a token uses at inference: a fixed top-k, or top-p — the fewest experts whose
// renormalised router weights reach p (at least 1, at most max_experts). A run-time setting.
struct RoutingPolicy {
  enum class Kind { TopK, TopP };
  Kind kind = Kind::TopK;
  int64_t k = 2;
  double p = 1.0;
  int64_t max_experts = 0;  // top-p cap; 0 = all experts
  static RoutingPolicy top_k(int64_t k);
  static RoutingPolicy top_p(double p, int64_t max_experts = 0);
  std::string str() const;  // "top-2", "top-p 0.9 (≤ 4)"
  // The spec form used by --routing and config.json: "top-k:K", "top-p:P" or "top-p:P:MAX".
  static RoutingPolicy parse(const std::string& spec);
  std::string spec() const;
};

struct MoEStats {
  std::vector<double> load;  // fraction of kept token-slots per expert (real tokens only)
  double load_cv = 0;        // coefficient of variation of load: 0 = perfectly balanced
  double router_entropy = 0; // mean over tokens of −Σ p log p (nats)
  double dropped_fraction = 0;
  double mean_active_experts = 0;  // kept slots per real token
  double aux_loss = 0, z_loss = 0;  // unweighted values
  // From a block's raw statistics (kRawExtra + 2E floats; see MoEBlock::raw_stats).
  static constexpr int64_t kRawExtra = 6;
  static MoEStats from_raw(const std::vector<float>& raw, int64_t experts);
};

class MoEBlock {
 public:
  MoEBlock(const ModelConfig& config, int64_t layer);

  Tensor router;                          // [E, C]
  Tensor gate_proj, up_proj, down_proj;   // [E, F, C], [E, F, C], [E, C, F]
  Tensor shared_gate_proj, shared_up_proj, shared_down_proj;  // shared expert (undefined if none)
  Tensor shared_expert_gate;              // [1, C] (undefined if ungated)
  Tensor score_bias;                      // [E] selection bias for aux-free balancing (no gradient)

  // x [B, T, C] → [B, T, C]. token_mask [B·T] (1 real, 0 padding/masked; undefined = all real)
  // decides which tokens count in the balancing loss and the statistics.
  Tensor forward(const Tensor& x, const Tensor& token_mask, const RoutingPolicy& policy);

  // The weighted balancing loss of the last forward (undefined when it has none).
  const Tensor& auxiliary_loss() const { return aux_loss_; }
  // The last forward's statistics: read from the device on first use (one host read).
  const MoEStats& stats() const;
  // The same, still on the device (f32 [2E + 6], MoEStats::from_raw's layout), for callers that
  // read many blocks at once; set_stats_from_raw hands the values read back.
  const Tensor& raw_stats() const { return raw_stats_; }
  void set_stats_from_raw(const std::vector<float>& raw) const;
  // Whether stats() can answer without reading the device.
  bool stats_read() const { return stats_.has_value() || !raw_stats_.defined(); }
  int64_t num_experts() const { return experts_; }
  // Position of the router-jitter random stream (saved in checkpoints for exact resume).
  uint64_t jitter_offset() const { return jitter_rng_.offset(); }
  void set_jitter_offset(uint64_t offset) { jitter_rng_.set_offset(offset); }

  // Expert parallelism (models/expert_parallel.cc): the block keeps experts [first, first + count)
  // of its E (gate_proj, up_proj and down_proj hold only those) and runs them for the tokens of
  // every rank that route to them; the router and the shared expert stay whole on every rank.
  struct ExpertShard {
    Communicator* comm = nullptr;
    int64_t first = 0, count = 0;
  };
  void keep_experts(Communicator& comm);
  const ExpertShard& expert_shard() const { return shard_; }
  bool experts_sharded() const { return shard_.comm != nullptr; }
  // A copy of this block with every rank's experts (a collective over the shard's ranks).
  std::shared_ptr<MoEBlock> with_all_experts() const;

 private:
  int64_t experts_, top_k_;
  bool softmax_scores_, norm_topk_prob_, expert_choice_;
  bool unit_weights_ = false;  // routed_weights "unit"
  double routed_scaling_, aux_coef_, z_coef_, capacity_factor_, jitter_, bias_rate_;
  std::string balancing_;
  Philox jitter_rng_;
  Tensor aux_loss_;
  Tensor raw_stats_;
  mutable std::optional<MoEStats> stats_;
  ExpertShard shard_;

  // The forward's steps (models/moe.cc).
  Tensor router_logits(const Tensor& xf);
  MoeRoute route(const Tensor& scores, const Tensor& mask, const RoutingPolicy& policy);
  Tensor slot_weights(const Tensor& scores, const MoeRoute& r) const;
  Tensor expert_parallel_ffn(const Tensor& xf, const MoeRoute& r, const Tensor& weights) const;
  Tensor run_local_experts(const Tensor& x, const Tensor& w, const std::vector<int64_t>& experts, const std::vector<int64_t>& counts) const;
  Tensor add_shared_expert(const Tensor& xf, const Tensor& routed) const;
  Tensor balancing_losses(const Tensor& logits, const Tensor& scores, const Tensor& mask, const MoeRoute& r);
};

}  // namespace smelt
