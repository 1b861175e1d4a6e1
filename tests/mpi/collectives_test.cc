// The communicator's collectives on the ranks mpirun starts (ctest runs 2): every call against
// the values each rank can compute on its own. Run: mpirun -np N smelt_mpi_tests.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "models/expert_parallel.h"
#include "ops/ops.h"
#include "optim/data_parallel.h"
#include "optim/trainer.h"
#include "runtime/communicator.h"
#include "runtime/error.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

class Collectives : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(world().backend(), "mpi") << "run under mpirun"; }
  Communicator& comm = world();
  const int rank = world().rank(), size = world().size();
};

TEST_F(Collectives, AllReduceSumsEveryType) {
  std::vector<float> f = {1.5f * static_cast<float>(rank + 1), -2.0f};
  comm.all_reduce_sum(f.data(), 2, CommType::F32);
  EXPECT_EQ(f[0], 1.5f * static_cast<float>(size * (size + 1) / 2));
  EXPECT_EQ(f[1], -2.0f * static_cast<float>(size));
  std::vector<double> d = {0.25 * rank};
  comm.all_reduce_sum(d.data(), 1, CommType::F64);
  EXPECT_EQ(d[0], 0.25 * size * (size - 1) / 2);
  std::vector<int64_t> i = {int64_t{1} << 40, rank};
  comm.all_reduce_sum(i.data(), 2, CommType::I64);
  EXPECT_EQ(i[0], (int64_t{1} << 40) * size);
  EXPECT_EQ(i[1], size * (size - 1) / 2);
}

TEST_F(Collectives, BroadcastFromEveryRoot) {
  for (int root = 0; root < size; ++root) {
    std::vector<int64_t> v = {rank, 7 * rank};
    comm.broadcast(v.data(), 2, CommType::I64, root);
    EXPECT_EQ(v, (std::vector<int64_t>{root, 7 * root}));
  }
}

TEST_F(Collectives, AllGatherPutsRanksInOrder) {
  const std::vector<float> mine = {static_cast<float>(rank), static_cast<float>(10 + rank)};
  std::vector<float> all(2 * size);
  comm.all_gather(mine.data(), 2, all.data(), CommType::F32);
  for (int r = 0; r < size; ++r) {
    EXPECT_EQ(all[2 * r], static_cast<float>(r));
    EXPECT_EQ(all[2 * r + 1], static_cast<float>(10 + r));
  }
}

// Rank r owns r + 1 values; every rank contributes (rank + 1)·(index + 1) at each index.
TEST_F(Collectives, ReduceScatterWithUnequalParts) {
  std::vector<int64_t> counts(size);
  std::iota(counts.begin(), counts.end(), 1);
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  std::vector<double> in(total);
  for (int64_t i = 0; i < total; ++i) in[i] = static_cast<double>((rank + 1) * (i + 1));
  std::vector<double> out(counts[rank]);
  comm.reduce_scatter_sum(in.data(), out.data(), counts, CommType::F64);
  const int64_t offset = rank * (rank + 1) / 2, rank_sum = size * (size + 1) / 2;
  for (int64_t j = 0; j < counts[rank]; ++j) EXPECT_EQ(out[j], static_cast<double>(rank_sum * (offset + j + 1)));
}

// Rank r sends p + 1 values to peer p, each encoding (sender, receiver, index); zero-length
// messages (to and from nobody) are allowed by sending nothing to rank 0 from the last rank.
TEST_F(Collectives, AllToAllWithPerPeerCounts) {
  auto count = [&](int from, int to) -> int64_t { return (from == size - 1 && to == 0) ? 0 : to + 1; };
  std::vector<int64_t> send_counts(size), recv_counts(size);
  std::vector<int64_t> in;
  for (int p = 0; p < size; ++p) {
    send_counts[p] = count(rank, p);
    recv_counts[p] = count(p, rank);
    for (int64_t j = 0; j < send_counts[p]; ++j) in.push_back(1000 * rank + 100 * p + j);
  }
  std::vector<int64_t> out(std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0}));
  comm.all_to_all(in.data(), send_counts, out.data(), recv_counts, CommType::I64);
  size_t at = 0;
  for (int p = 0; p < size; ++p)
    for (int64_t j = 0; j < recv_counts[p]; ++j) EXPECT_EQ(out[at++], 1000 * p + 100 * rank + j);
}

// Gradients: summed over ranks in buckets smaller than one tensor and larger than several; a
// gradient present on one rank only appears (as that rank's values) on every rank; one absent
// everywhere stays absent.
TEST_F(Collectives, GradientsSumOverRanksInBuckets) {
  for (const int64_t bucket : {int64_t{3}, int64_t{1} << 20}) {
    std::vector<Tensor> params = {Tensor::zeros({2, 3}, DType::F32), Tensor::zeros({4}, DType::F32), Tensor::zeros({1}, DType::F32)};
    params[0].set_grad(Tensor::full({2, 3}, static_cast<float>(rank + 1)));
    if (rank == size - 1) params[1].set_grad(Tensor::full({4}, 5.0f));
    all_reduce_gradients(params, comm, bucket);
    for (float v : params[0].grad().to_vector()) EXPECT_EQ(v, static_cast<float>(size * (size + 1) / 2));
    ASSERT_TRUE(params[1].grad().defined());
    for (float v : params[1].grad().to_vector()) EXPECT_EQ(v, 5.0f);
    EXPECT_FALSE(params[2].grad().defined());
    params[0].copy_from(Tensor::full({2, 3}, static_cast<float>(rank)));
    broadcast_parameters(params, comm, size - 1, bucket);
    for (float v : params[0].to_vector()) EXPECT_EQ(v, static_cast<float>(size - 1));
  }
}

// Split: one communicator per rank (every collective a copy), and all ranks in reverse order.
TEST_F(Collectives, SplitMakesSubCommunicators) {
  const std::unique_ptr<Communicator> alone = comm.split(rank, 0);
  EXPECT_EQ(alone->size(), 1);
  EXPECT_EQ(alone->rank(), 0);
  int64_t v = rank + 1;
  alone->all_reduce_sum(&v, 1, CommType::I64);
  EXPECT_EQ(v, rank + 1);
  const std::unique_ptr<Communicator> reversed = comm.split(0, size - rank);
  EXPECT_EQ(reversed->size(), size);
  EXPECT_EQ(reversed->rank(), size - 1 - rank);
  int64_t root_rank = rank;
  reversed->broadcast(&root_rank, 1, CommType::I64, 0);  // rank 0 of the reversed order: the last world rank
  EXPECT_EQ(root_rank, size - 1);
}

TEST_F(Collectives, MicroBatchesSplitEvenlyOrRefuse) {
  const MicroBatchRange r = micro_batches_of_rank(2 * size, rank, size);
  EXPECT_EQ(r.begin, 2 * rank);
  EXPECT_EQ(r.size(), 2);
  if (size > 1) EXPECT_THROW(micro_batches_of_rank(size + 1, rank, size), Error);
  EXPECT_EQ(batch_split(1, 2 * size, size), BatchSplit::MicroBatches);
  if (size > 1) {
    EXPECT_EQ(batch_split(2 * size, 1, size), BatchSplit::Rows);
    EXPECT_THROW(batch_split(size + 1, size + 1, size), Error);
  }
}

// Expert parallelism against one process: the same model on every rank, rank r training on
// micro-batch r. One process runs every micro-batch on the whole model; the sharded model's
// gradients (replicated parts summed over ranks, each rank's experts complete where they live)
// must be those gradients.
TEST_F(Collectives, ExpertParallelGradientsEqualOneProcess) {
  ModelConfig c = testing::small_config(64, 32, 64, 2, 4, 2, 32);
  c.num_local_experts = 2 * size;
  c.num_experts_per_tok = 2;
  c.moe_intermediate_size = 48;
  auto batch = [&](int r) {
    Philox rng(100 + static_cast<uint64_t>(r));
    std::vector<int64_t> ids, targets;
    for (int i = 0; i < 2 * 16; ++i) ids.push_back(static_cast<int64_t>(rng.next_u32() % 64));
    for (int i = 0; i < 2 * 16; ++i) targets.push_back(static_cast<int64_t>(rng.next_u32() % 64));
    return Batch{Tensor::from_ints(ids, {2, 16}), Tensor::from_ints(targets, {2, 16}), Tensor(), {}, Tensor()};
  };
  const float share = 1.0f / static_cast<float>(size);
  Transformer whole = Transformer::create(c, 5);
  for (int r = 0; r < size; ++r) ops::mul(training_loss(whole, batch(r)), share).backward();
  Transformer sharded = Transformer::create(c, 5);
  shard_experts(sharded, comm);
  ops::mul(training_loss(sharded, batch(rank)), share).backward();
  const std::vector<Tensor> experts = sharded_expert_parameters(sharded);
  const NamedTensors want = whole.named_parameters(), got = sharded.named_parameters();
  std::vector<Tensor> replicated;
  for (const auto& [name, t] : got) {
    bool is_expert = false;
    for (const Tensor& e : experts) is_expert = is_expert || e.storage() == t.storage();
    if (!is_expert) replicated.push_back(t);
  }
  all_reduce_gradients(replicated, comm);
  for (size_t i = 0; i < want.size(); ++i) {
    const Tensor w = local_part(sharded, want[i].first, want[i].second.grad());
    const std::vector<float> a = w.to_vector(), b = got[i].second.grad().to_vector();
    ASSERT_EQ(a.size(), b.size()) << want[i].first;
    double worst = 0, scale = 0;
    for (size_t j = 0; j < a.size(); ++j) {
      worst = std::max(worst, std::fabs(static_cast<double>(a[j]) - b[j]));
      scale = std::max(scale, std::fabs(static_cast<double>(a[j])));
    }
    EXPECT_EQ(worst, 0.0) << want[i].first << " on rank " << rank << ": " << worst << " of " << scale;
  }
}

}  // namespace
}  // namespace smelt

int main(int argc, char** argv) {
  smelt::init_distributed(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  const int failed = RUN_ALL_TESTS();
  // Any rank's failure fails the job: the sum of the ranks' results decides every exit code.
  int64_t failures = failed != 0 ? 1 : 0;
  smelt::world().all_reduce_sum(&failures, 1, smelt::CommType::I64);
  smelt::finalize_distributed();
  return failures == 0 ? 0 : 1;
}
