#include "models/expert_parallel.h"

#include <algorithm>
#include <numeric>

#include "autograd/grad_mode.h"
#include "ops/exchange.h"
#include "ops/ops.h"
#include "runtime/tensor_collectives.h"

namespace smelt {

void MoEBlock::keep_experts(Communicator& comm) {
  const int64_t ranks = comm.size();
  SMELT_CHECK(!shard_.comm, "the experts are already sharded");
  SMELT_CHECK(experts_ % ranks == 0, "expert parallelism over ", ranks, " ranks needs a multiple of ", ranks,
              " experts per layer; the model has ", experts_);
  shard_ = {&comm, comm.rank() * (experts_ / ranks), experts_ / ranks};
  NoGradGuard no_grad;
  for (Tensor* t : {&gate_proj, &up_proj, &down_proj}) {
    const bool trainable = t->requires_grad();
    *t = ops::slice(*t, 0, shard_.first, shard_.first + shard_.count).clone();
    t->set_requires_grad(trainable);
  }
}

std::shared_ptr<MoEBlock> MoEBlock::with_all_experts() const {
  auto all = std::make_shared<MoEBlock>(*this);
  if (!shard_.comm) return all;
  for (Tensor* t : {&all->gate_proj, &all->up_proj, &all->down_proj}) *t = gather_experts(*t, *shard_.comm);
  all->shard_ = {};
  return all;
}

// The experts of this rank over the rows received, [R, C] → [R, C]: one grouped dispatch per
// sending rank, so that each rank's rows (one micro-batch) make the same GEMMs, and the expert
// weights the same gradient terms, as in one process.
Tensor MoEBlock::run_local_experts(const Tensor& x, const Tensor& w, const std::vector<int64_t>& experts,
                                   const std::vector<int64_t>& counts) const {
  const Device dev = x.device();
  std::vector<Tensor> parts;
  int64_t at = 0;
  for (int64_t n : counts) {
    if (n == 0) continue;
    const std::vector<int64_t> part_experts(experts.begin() + at, experts.begin() + at + n);
    parts.push_back(ops::moe_ffn(ops::contiguous(ops::slice(x, 0, at, at + n)), gate_proj, up_proj, down_proj, Tensor::arange(n, DType::I64, dev),
                                 Tensor::from_ints(part_experts, {n}, DType::I64, dev), ops::contiguous(ops::slice(w, 0, at, at + n))));
    at += n;
  }
  return parts.size() == 1 ? parts[0] : ops::cat(parts, 0);
}

// The token-slots this rank routed travel to the ranks that own their experts, each row the
// token's hidden state with the slot's routing weight as one more column (one exchange carries
// both, and the weight's gradient comes back with the state's). There the grouped expert GEMM
// runs over every rank's rows for its experts; the weighted outputs come back and are added to
// their tokens. Every rank makes both exchanges even when it sends or receives no rows, so that
// the ranks meet in every collective, forward and backward.
Tensor MoEBlock::expert_parallel_ffn(const Tensor& xf, const MoeRoute& r, const Tensor& weights) const {
  Communicator& comm = *shard_.comm;
  const int ranks = comm.size();
  const int64_t N = xf.size(0), C = xf.size(1);
  const std::vector<int64_t> token = r.token.to_int_vector(), expert = r.expert.to_int_vector();
  // The kept slots (expert ≥ 0) in expert order, which is owner order.
  std::vector<int64_t> order;
  for (size_t s = 0; s < expert.size(); ++s)
    if (expert[s] >= 0) order.push_back(static_cast<int64_t>(s));
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return expert[a] < expert[b]; });
  const int64_t S = static_cast<int64_t>(order.size());
  std::vector<int64_t> send_counts(ranks, 0), send_experts, slot_tokens;
  for (int64_t s : order) {
    ++send_counts[expert[s] / shard_.count];
    send_experts.push_back(expert[s] % shard_.count);  // the expert's index on its owner
    slot_tokens.push_back(token[s]);
  }
  std::vector<int64_t> recv_counts(ranks, 0);
  const std::vector<int64_t> one_each(ranks, 1);
  comm.all_to_all(send_counts.data(), one_each, recv_counts.data(), one_each, CommType::I64);
  const int64_t R = std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0});
  std::vector<int64_t> recv_experts(static_cast<size_t>(R));
  comm.all_to_all(send_experts.data(), send_counts, recv_experts.data(), recv_counts, CommType::I64);

  const Device dev = xf.device();
  const Tensor slots = Tensor::from_ints(order, {S}, DType::I64, dev);
  const Tensor rows = ops::cat({ops::index_select(xf, 0, Tensor::from_ints(slot_tokens, {S}, DType::I64, dev)),
                                ops::reshape(ops::index_select(weights, 0, slots), {S, 1})},
                               1);
  const Tensor received = ops::all_to_all_rows(rows, send_counts, recv_counts, comm);  // [R, C + 1]
  const Tensor x_in = ops::contiguous(ops::slice(received, 1, 0, C));
  const Tensor w_in = ops::contiguous(ops::reshape(ops::slice(received, 1, C, C + 1), {R}));
  const Tensor y = R > 0 ? run_local_experts(x_in, w_in, recv_experts, recv_counts) : ops::mul(x_in, 0.0f);  // keeps the backward's exchange
  const Tensor back = ops::all_to_all_rows(y, recv_counts, send_counts, comm);  // [S, C], in `order`
  std::vector<int64_t> index(static_cast<size_t>(S * C));
  for (int64_t i = 0; i < S; ++i) std::fill_n(index.begin() + i * C, C, slot_tokens[static_cast<size_t>(i)]);
  return ops::scatter_add(Tensor::zeros({N, C}, DType::F32, dev), 0, Tensor::from_ints(index, {S, C}, DType::I64, dev), back);
}

void shard_experts(Transformer& model, Communicator& comm) {
  SMELT_CHECK(model.config().num_local_experts > 0, "expert parallelism needs an MoE model; this one is dense");
  for (size_t i = 0; i < model.num_layers(); ++i)
    if (model.layer(i).moe) model.layer(i).moe->keep_experts(comm);
}

bool experts_sharded(const Transformer& model) {
  for (size_t i = 0; i < model.num_layers(); ++i)
    if (model.layer(i).moe && model.layer(i).moe->experts_sharded()) return true;
  return false;
}

Communicator& expert_group(const Transformer& model) {
  for (size_t i = 0; i < model.num_layers(); ++i)
    if (model.layer(i).moe && model.layer(i).moe->experts_sharded()) return *model.layer(i).moe->expert_shard().comm;
  SMELT_FAIL("the model's experts are not sharded");
}

std::vector<Tensor> sharded_expert_parameters(const Transformer& model) {
  std::vector<Tensor> out;
  for (size_t i = 0; i < model.num_layers(); ++i) {
    const std::shared_ptr<MoEBlock>& m = model.layer(i).moe;
    if (m && m->experts_sharded())
      for (const Tensor* t : {&m->gate_proj, &m->up_proj, &m->down_proj}) out.push_back(*t);
  }
  return out;
}

Tensor local_part(const Transformer& model, const std::string& parameter_name, const Tensor& full) {
  for (const auto& [name, t] : model.named_parameters()) {
    if (name != parameter_name) continue;
    for (size_t i = 0; i < model.num_layers(); ++i) {
      const std::shared_ptr<MoEBlock>& m = model.layer(i).moe;
      if (!m || !m->experts_sharded()) continue;
      for (const Tensor* e : {&m->gate_proj, &m->up_proj, &m->down_proj}) {
        if (e->storage() != t.storage()) continue;
        const MoEBlock::ExpertShard& s = m->expert_shard();
        SMELT_CHECK(full.dim() == e->dim() && full.size(0) == s.count * s.comm->size(), parameter_name, ": ", full.str(),
                    " is not the unsharded shape of ", e->str(), " × ", s.comm->size(), " ranks");
        NoGradGuard no_grad;
        return ops::slice(full, 0, s.first, s.first + s.count).clone();
      }
    }
  }
  return full;
}

Tensor gather_experts(const Tensor& local, Communicator& comm) {
  const bool trainable = local.requires_grad();
  Tensor all = all_gather_rows(local, comm).to(local.device());
  all.set_requires_grad(trainable);
  return all;
}

Transformer with_all_experts(const Transformer& model) {
  if (!experts_sharded(model)) return model;
  Transformer all = model;
  for (size_t i = 0; i < all.num_layers(); ++i)
    if (all.layer(i).moe) all.layer(i).moe = model.layer(i).moe->with_all_experts();
  return all;
}

}  // namespace smelt
