#include "optim/data_parallel.h"

#include <set>

#include "models/expert_parallel.h"
#include "runtime/error.h"
#include "runtime/tensor_collectives.h"

namespace smelt {

MicroBatchRange micro_batches_of_rank(int64_t grad_accum, int rank, int ranks) {
  SMELT_CHECK(ranks > 0 && rank >= 0 && rank < ranks, "rank ", rank, " of ", ranks);
  SMELT_CHECK(grad_accum % ranks == 0, "train.grad_accum ", grad_accum, " is not a multiple of the ", ranks,
              " ranks: each rank computes whole micro-batches of the global batch (batch_size × grad_accum sequences); keep "
              "that product and make grad_accum a multiple of ", ranks);
  const int64_t per_rank = grad_accum / ranks;
  return {rank * per_rank, (rank + 1) * per_rank};
}

BatchSplit batch_split(int64_t batch_size, int64_t grad_accum, int ranks) {
  if (grad_accum % ranks == 0) return BatchSplit::MicroBatches;
  SMELT_CHECK(batch_size % ranks == 0, "the ", ranks, " ranks divide neither train.grad_accum (", grad_accum, ") nor train.batch_size (",
              batch_size, "): each rank takes whole micro-batches or an equal share of every micro-batch's rows");
  return BatchSplit::Rows;
}

void all_reduce_gradients(const std::vector<Tensor>& params, Communicator& comm, int64_t bucket_floats) {
  if (comm.size() == 1) return;
  // First agree on which parameters have a gradient anywhere.
  std::vector<int64_t> has(params.size());
  for (size_t i = 0; i < params.size(); ++i) has[i] = params[i].grad().defined() ? 1 : 0;
  comm.all_reduce_sum(has.data(), static_cast<int64_t>(has.size()), CommType::I64);
  std::vector<Tensor> grads;
  for (size_t i = 0; i < params.size(); ++i) {
    if (has[i] == 0) continue;
    if (!params[i].grad().defined()) params[i].set_grad(Tensor::zeros(params[i].shape(), DType::F32, params[i].device()));
    grads.push_back(params[i].grad());
  }
  all_reduce_sum(grads, comm, bucket_floats);
}

OptimizerState with_all_experts(const OptimizerState& state, const Transformer& model) {
  const std::vector<Tensor> sharded = sharded_expert_parameters(model);
  if (sharded.empty()) return state;
  Communicator& comm = expert_group(model);
  std::set<std::string> names;
  for (const auto& [name, t] : model.trainable_parameters())
    for (const Tensor& e : sharded)
      if (e.storage() == t.storage()) names.insert(name);
  OptimizerState all = state;
  for (auto& [name, t] : all.first) {
    const size_t dot = name.find('.');
    if (dot != std::string::npos && names.count(name.substr(dot + 1))) t = gather_experts(t, comm);
  }
  return all;
}

void broadcast_parameters(const std::vector<Tensor>& params, Communicator& comm, int root, int64_t bucket_floats) {
  broadcast(params, comm, root, bucket_floats);
}

}  // namespace smelt
