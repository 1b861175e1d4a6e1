// smelt plan's arithmetic: the memory rows follow the parameter split exactly, the layouts'
// savings are the ones each design promises, and the byte counts follow the collectives.
#include <gtest/gtest.h>

#include "optim/parallel_plan.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

ModelConfig moe_config() {
  ModelConfig c = testing::small_config(256, 64, 128, 2, 4, 2);
  c.num_local_experts = 4;
  c.num_experts_per_tok = 2;
  c.moe_intermediate_size = 96;
  return c;
}

TEST(Plan, MemoryFollowsTheParameterSplit) {
  const ModelConfig c = moe_config();
  TrainConfig t;
  t.batch_size = 4;
  t.grad_accum = 2;
  t.seq_len = 32;
  const ParameterSplit p = split_parameters(c);
  EXPECT_EQ(p.total, c.parameter_count());
  EXPECT_EQ(p.experts, 2 * 4 * 3 * 64 * 96);  // layers × experts × 3 projections × C × F
  ClusterSpec cl;
  cl.ranks = 2;
  const std::vector<PlanRow> rows = plan_training(c, t, cl);
  ASSERT_EQ(rows.size(), 3u);
  const double P = static_cast<double>(p.total), local = static_cast<double>(p.replicated()) + static_cast<double>(p.experts) / 2;
  EXPECT_EQ(rows[0].weight_bytes, 4 * P);
  EXPECT_EQ(rows[0].adam_bytes, 8 * P);
  EXPECT_EQ(rows[1].adam_bytes, 4 * P);  // ZeRO-1 on 2 ranks: half the moments
  EXPECT_EQ(rows[1].weight_bytes, rows[0].weight_bytes);
  EXPECT_EQ(rows[2].weight_bytes, 4 * local);
  EXPECT_EQ(rows[2].adam_bytes, 8 * local);
  EXPECT_GT(rows[2].activation_bytes, rows[0].activation_bytes);  // the exchanged rows
  for (const PlanRow& r : rows) EXPECT_TRUE(r.runs_here) << r.layout;
  // A ring all-reduce moves 2 (N−1)/N of the gradient bytes per rank; ZeRO-1 adds the parameters.
  EXPECT_EQ(rows[0].comm_bytes, 4 * P);
  EXPECT_EQ(rows[1].comm_bytes, 4 * P + 2 * P);
  // Compute: 6 × active parameters + attention, per token of the global batch, over the ranks.
  EXPECT_DOUBLE_EQ(rows[0].compute_seconds, training_flops_per_token(c, 32) * 4 * 2 * 32 / 2 / (cl.tflops_per_rank * 1e12));
}

TEST(Plan, LayoutsThisJobCannotRunSayWhy) {
  ModelConfig c = moe_config();
  TrainConfig t;
  t.grad_accum = 2;
  ClusterSpec cl;
  cl.ranks = 3;
  std::vector<PlanRow> rows = plan_training(c, t, cl);
  EXPECT_FALSE(rows[0].runs_here);
  EXPECT_NE(rows[0].note.find("grad_accum 2"), std::string::npos);
  t.grad_accum = 3;
  rows = plan_training(c, t, cl);
  EXPECT_TRUE(rows[0].runs_here);
  EXPECT_FALSE(rows[2].runs_here);
  EXPECT_NE(rows[2].note.find("3 does not divide the 4 experts"), std::string::npos);
  cl.ranks = 6;  // 3 groups of 2 ranks, each sharing out the 4 experts
  cl.expert_parallel = 2;
  t.grad_accum = 6;
  rows = plan_training(c, t, cl);
  EXPECT_TRUE(rows[2].runs_here) << rows[2].note;
  EXPECT_EQ(rows[2].layout, "expert parallel (2)");
  const ParameterSplit p = split_parameters(c);
  EXPECT_EQ(rows[2].weight_bytes, 4 * (static_cast<double>(p.replicated()) + static_cast<double>(p.experts) / 2));
  cl.expert_parallel = 0;
  cl.ranks = 1;
  rows = plan_training(c, t, cl);
  EXPECT_EQ(rows[0].comm_bytes, 0.0);
  cl.ranks = 0;
  EXPECT_THROW(plan_training(c, t, cl), Error);
}

}  // namespace
}  // namespace smelt
