// On paper, beyond this machine: the memory each rank of a training job needs (weights,
// gradients, AdamW moments, kept activations) under data parallelism, ZeRO-1 and expert
// parallelism, and a step-time estimate split into compute (from the model's FLOPs) and
// communication (from the collectives' byte counts over the links). smelt plan prints it; the
// README sets it beside the measured peaks of real runs.
#pragma once
#include <string>
#include <vector>

#include "models/config.h"
#include "optim/trainer.h"

namespace smelt {

struct ClusterSpec {
  int64_t ranks = 1;
  int64_t ranks_per_node = 0;      // GPUs (or processes) per node; 0: every rank on one node
  int64_t expert_parallel = 0;     // ranks sharing out each copy of the experts (0: all of them)
  double link_gbps = 100;          // between nodes, per rank (Gbit/s)
  double node_gbps = 200;          // within a node (shared memory, NVLink), per rank (Gbit/s)
  double tflops_per_rank = 0.05;   // sustained training FLOP/s per rank, in TFLOP/s
};

// The parameter split that decides the layouts' memory: every parameter, and the routed experts'.
struct ParameterSplit {
  int64_t total = 0, experts = 0;
  int64_t replicated() const { return total - experts; }
};
ParameterSplit split_parameters(const ModelConfig& model);

struct PlanRow {
  std::string layout;  // "data parallel", "data parallel + ZeRO-1", "expert parallel"
  bool runs_here = true;  // false when the recipe or the ranks rule it out (why: `note`)
  std::string note;
  double weight_bytes = 0, grad_bytes = 0, adam_bytes = 0, activation_bytes = 0;
  double total_bytes() const { return weight_bytes + grad_bytes + adam_bytes + activation_bytes; }
  double compute_seconds = 0, comm_bytes = 0, comm_seconds = 0;
  double step_seconds() const { return compute_seconds + comm_seconds; }
};

// f32 bytes of the activations one micro-batch keeps for backward, per rank: per token and
// layer the residual stream, norms, q/k/v, attention output and log-sum-exp, and the FFN's
// (dense: gate, up, product; MoE: k slots' gate, up, product and output, router scores), plus
// the embedding and final norm. Expert parallelism adds the exchanged rows.
double activation_bytes(const ModelConfig& model, const TrainConfig& train, bool expert_parallel);
// Training FLOPs per token: 6 × active parameters + 12 × layers × sequence × width (attention).
double training_flops_per_token(const ModelConfig& model, int64_t seq_len);

std::vector<PlanRow> plan_training(const ModelConfig& model, const TrainConfig& train, const ClusterSpec& cluster);

}  // namespace smelt
