#include "optim/parallel_plan.h"

#include "runtime/error.h"

namespace smelt {

ParameterSplit split_parameters(const ModelConfig& c) {
  ParameterSplit s;
  s.total = c.parameter_count();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    if (c.is_moe_layer(l)) s.experts += c.num_local_experts * 3 * c.hidden_size * c.expert_size();
  return s;
}

double activation_bytes(const ModelConfig& c, const TrainConfig& t, bool expert_parallel) {
  const double C = static_cast<double>(c.hidden_size), kv = static_cast<double>(c.num_key_value_heads * c.head_dim());
  const double H = static_cast<double>(c.num_attention_heads), k = static_cast<double>(c.num_experts_per_tok);
  double per_token = 2 * C;  // embedding output, final norm
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    per_token += 7 * C + 2 * kv + H;  // residuals, 2 norms, q, attention out, o_proj in; k, v; lse
    if (!c.is_moe_layer(l)) {
      per_token += 3 * static_cast<double>(c.intermediate_size);
      continue;
    }
    per_token += k * (3 * static_cast<double>(c.expert_size()) + C) + 2 * static_cast<double>(c.num_local_experts);
    per_token += 3 * static_cast<double>(c.shared_expert_intermediate_size);
    if (expert_parallel) per_token += 4 * k * (C + 1);  // rows sent, received, their copy, rows back
  }
  return 4.0 * per_token * static_cast<double>(t.batch_size * t.seq_len);
}

double training_flops_per_token(const ModelConfig& c, int64_t seq_len) {
  return 6.0 * static_cast<double>(c.active_parameter_count()) +
         12.0 * static_cast<double>(c.num_hidden_layers) * static_cast<double>(seq_len) * static_cast<double>(c.hidden_size);
}

namespace {

// Seconds to move `bytes` through one rank's link: within a node while the job fits one node.
double seconds_for(double bytes, const ClusterSpec& cl) {
  const bool one_node = cl.ranks_per_node == 0 || cl.ranks <= cl.ranks_per_node;
  const double gbps = one_node ? cl.node_gbps : cl.link_gbps;
  return bytes * 8.0 / (gbps * 1e9);
}

}  // namespace

std::vector<PlanRow> plan_training(const ModelConfig& c, const TrainConfig& t, const ClusterSpec& cl) {
  SMELT_CHECK(cl.ranks >= 1, "--ranks must be ≥ 1, got ", cl.ranks);
  SMELT_CHECK(cl.ranks_per_node >= 0 && cl.link_gbps > 0 && cl.node_gbps > 0 && cl.tflops_per_rank > 0,
              "--gpus-per-node must be ≥ 0 and the link speeds and --tflops-per-rank positive");
  const double N = static_cast<double>(cl.ranks);
  const ParameterSplit p = split_parameters(c);
  const double P = static_cast<double>(p.total), Pe = static_cast<double>(p.experts), Pr = static_cast<double>(p.replicated());
  const double global_tokens = static_cast<double>(t.batch_size * t.grad_accum * t.seq_len);
  const double compute = training_flops_per_token(c, t.seq_len) * global_tokens / N / (cl.tflops_per_rank * 1e12);
  const double ring = N > 1 ? 2.0 * (N - 1) / N : 0.0;  // bytes per rank of a ring all-reduce, per byte reduced
  // Whole micro-batches per rank, or an equal share of every micro-batch's rows (optim/data_parallel.h).
  const bool divides = t.grad_accum % cl.ranks == 0 || t.batch_size % cl.ranks == 0;
  const std::string split_note = divides ? ""
                                         : "the ranks divide neither grad_accum " + std::to_string(t.grad_accum) + " nor batch_size " +
                                               std::to_string(t.batch_size);

  PlanRow dp{"data parallel", divides, split_note, 4 * P, 4 * P, 8 * P, activation_bytes(c, t, false)};
  dp.compute_seconds = compute;
  dp.comm_bytes = ring * 4 * P;
  dp.comm_seconds = seconds_for(dp.comm_bytes, cl);

  PlanRow zero = dp;
  zero.layout = "data parallel + ZeRO-1";
  zero.adam_bytes = 8 * P / N;  // whole tensors dealt out: ≈ P/N each
  zero.comm_bytes = dp.comm_bytes + (N - 1) / N * 4 * P;  // + every parameter from its owner
  zero.comm_seconds = seconds_for(zero.comm_bytes, cl);

  // Expert parallel over groups of M ranks (M = every rank unless given).
  const int64_t m_ranks = cl.expert_parallel > 0 ? cl.expert_parallel : cl.ranks;
  const double M = static_cast<double>(m_ranks);
  PlanRow ep{"expert parallel (" + std::to_string(m_ranks) + ")", divides, split_note};
  const bool experts_divide = c.num_local_experts > 0 && c.num_local_experts % m_ranks == 0 && cl.ranks % m_ranks == 0;
  if (c.num_local_experts == 0) ep.note = "the model is dense";
  else if (!experts_divide) ep.note = std::to_string(m_ranks) + " does not divide the " + std::to_string(c.num_local_experts) + " experts and the ranks";
  ep.runs_here = divides && experts_divide && m_ranks > 1;
  const double local = Pr + Pe / M;
  ep.weight_bytes = 4 * local;
  ep.grad_bytes = 4 * local;
  ep.adam_bytes = 8 * local;
  ep.activation_bytes = activation_bytes(c, t, true);
  ep.compute_seconds = compute;
  // Replicated gradients all-reduced over every rank, each expert's over the N/M ranks that hold
  // it; per MoE layer and micro-batch 4 exchanges (forward there and back, backward there and
  // back) of each token-slot's row to the other ranks of its group.
  int64_t moe_layers = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) moe_layers += c.is_moe_layer(l) ? 1 : 0;
  const double slot_bytes = 4.0 * (static_cast<double>(c.hidden_size) + 1) * static_cast<double>(c.num_experts_per_tok);
  const double replicas = N / M, replica_ring = replicas > 1 ? 2.0 * (replicas - 1) / replicas : 0.0;
  ep.comm_bytes = ring * 4 * Pr + replica_ring * 4 * Pe / M +
                  4.0 * static_cast<double>(moe_layers) * (global_tokens / N) * slot_bytes * (M - 1) / M;
  ep.comm_seconds = seconds_for(ep.comm_bytes, cl);
  return {dp, zero, ep};
}

}  // namespace smelt
