// Expert parallelism: each of the job's ranks keeps E/M of every MoE layer's experts; after
// routing, each rank's token-slots travel to the ranks that own their experts (one unequal
// all-to-all), run there through the grouped expert GEMM with every other rank's tokens for the
// same experts, and come back (a second all-to-all); the backward retraces both. Routers,
// attention, norms, embeddings and shared experts stay whole (data parallel) on every rank.
// M consecutive ranks form an expert group; with N = D·M ranks there are D groups.
#pragma once
#include <string>
#include <vector>

#include "models/transformer.h"
#include "runtime/communicator.h"

namespace smelt {

// Keeps only this rank's experts in every MoE layer (E must be a multiple of the ranks).
void shard_experts(Transformer& model, Communicator& comm);
bool experts_sharded(const Transformer& model);
// The ranks that share out the model's experts (the model must be sharded).
Communicator& expert_group(const Transformer& model);
// The parameters that hold this rank's experts only: their gradients are complete on their rank
// and are not summed over ranks.
std::vector<Tensor> sharded_expert_parameters(const Transformer& model);
// `full` (a tensor of the unsharded model named like one of its parameters, or an optimizer
// state of it) cut to this rank's experts where that parameter is sharded; otherwise `full`.
Tensor local_part(const Transformer& model, const std::string& parameter_name, const Tensor& full);
// `local` (this rank's part of a sharded parameter, or of its optimizer state) with every rank's
// parts, the unsharded tensor. A collective: every rank calls it for the same tensors.
Tensor gather_experts(const Tensor& local, Communicator& comm);
// A copy of the model with every expert (a collective); the model itself unless it is sharded.
Transformer with_all_experts(const Transformer& model);

}  // namespace smelt
