// Training on the simulated device: a tiny MoE model takes optimizer steps on "sim", whose
// memory only copies reach, and matches the same steps on the CPU bit for bit (the sim device
// runs the CPU's kernels). Proof that nothing above ops/ reads device memory directly; and each
// step reads the device back exactly once.
#include <gtest/gtest.h>

#include <cmath>

#include "ops/ops.h"
#include "optim/trainer.h"
#include "ops/precision.h"
#include "autograd/node.h"
#include "runtime/device_backend.h"
#include "tests/support/sim_device.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

ModelConfig tiny_moe() {
  ModelConfig c = testing::small_config(32, 16, 24, 2, 4, 2);
  c.num_local_experts = 4;
  c.num_experts_per_tok = 2;
  c.router_aux_loss_coef = 0.01;
  c.router_z_loss_coef = 0.001;
  return c;
}

Batch make_batch(Device device) { return testing::pattern_batch(2, 12, 32, 0, 5, device); }  // some positions carry no loss

TrainConfig tiny_recipe() {
  TrainConfig tc;
  tc.steps = 4;
  tc.batch_size = 2;
  tc.seq_len = 12;
  tc.lr = 1e-2;
  tc.warmup_steps = 1;
  tc.grad_clip = 0.5;  // small enough to clip: the clip factor travels as a tensor
  return tc;
}

TEST(SimTraining, TinyMoeStepsMatchTheCpuWithOneHostReadEach) {
  const Device sim = testing::sim_device();
  Transformer cpu = Transformer::create(tiny_moe(), 5);
  Transformer dev = cpu.to(sim);
  EXPECT_EQ(dev.device(), sim);
  Trainer on_cpu(cpu, tiny_recipe()), on_sim(dev, tiny_recipe());
  const Batch b_cpu = make_batch(Device::cpu()), b_sim = make_batch(sim);
  const int64_t moved_before = testing::sim_transferred_bytes();
  for (int64_t step = 0; step < 4; ++step) {
    const StepMetrics want = on_cpu.step(step, {b_cpu});
    const int64_t reads = host_read_count();
    const StepMetrics got = on_sim.step(step, {b_sim});
    EXPECT_EQ(host_read_count() - reads, 1) << "step " << step;
    EXPECT_EQ(got.loss, want.loss) << "step " << step;
    EXPECT_EQ(got.aux_loss, want.aux_loss) << "step " << step;
    EXPECT_EQ(got.grad_norm, want.grad_norm) << "step " << step;
    ASSERT_EQ(got.moe.size(), want.moe.size());
    for (size_t l = 0; l < got.moe.size(); ++l) {
      EXPECT_EQ(got.moe[l].second.load, want.moe[l].second.load);
      EXPECT_EQ(got.moe[l].second.router_entropy, want.moe[l].second.router_entropy);
    }
  }
  EXPECT_GT(testing::sim_transferred_bytes(), moved_before);  // the kernels really ran on host copies
  const NamedTensors a = cpu.named_parameters(), b = dev.named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].second.to_vector(), b[i].second.to_vector()) << a[i].first;
  EXPECT_GT(on_cpu.step(4, {b_cpu}).grad_norm, 0.0);
}

TEST(SimTraining, ACpuStepReadsBackOnce) {
  Transformer m = Transformer::create(tiny_moe(), 6);
  Trainer t(m, tiny_recipe());
  const Batch b = make_batch(Device::cpu());
  const int64_t reads = host_read_count();
  t.step(0, {b, b});  // two micro-batches, still one read
  EXPECT_EQ(host_read_count() - reads, 1);
}

TEST(SimTraining, ANonFiniteStepIsRefusedAndLeavesTheWeights) {
  Transformer m = Transformer::create(tiny_moe(), 7);
  const std::vector<float> before = m.named_parameters()[0].second.to_vector();
  TrainConfig tc = tiny_recipe();
  tc.lr = 1e30;  // the first update overflows the weights; the second step's loss is not finite
  Trainer t(m, tc);
  const Batch b = make_batch(Device::cpu());
  t.step(0, {b});
  std::vector<float> after_first = m.named_parameters()[0].second.to_vector();
  EXPECT_NE(after_first, before);
  bool refused = false;
  for (int64_t s = 1; s < 4 && !refused; ++s) {
    const std::vector<float> held = m.named_parameters()[0].second.to_vector();
    try {
      t.step(s, {b});
    } catch (const Error& e) {
      refused = true;
      const std::string& msg = e.message();
      EXPECT_TRUE(msg.find("not finite") != std::string::npos || msg.find("loss became") != std::string::npos) << msg;
      // the refused step did not touch the weights
      const std::vector<float> now = m.named_parameters()[0].second.to_vector();
      for (size_t i = 0; i < now.size(); ++i)
        if (!std::isnan(held[i])) EXPECT_EQ(now[i], held[i]);
    }
  }
  EXPECT_TRUE(refused);
}

// Mixed precision on a device keeps the activations saved for backward in bf16: a forward keeps
// much less device memory alive, and the gradients stay within bf16's rounding of the f32 ones.
TEST(SimTraining, Bf16KeepsSavedActivationsInHalfTheMemory) {
  const Device sim = testing::sim_device();
  ModelConfig c = testing::small_config(64, 64, 192, 2, 4, 2);
  const Transformer model = Transformer::create(c, 9).to(sim);
  const Batch b = testing::pattern_batch(4, 64, 64, 0, 0, sim);
  auto run = [&](bool bf16, int64_t* kept) {
    const MatmulPrecisionScope precision(bf16 ? MatmulPrecision::BF16 : MatmulPrecision::F32);
    const SavedActivationsInBf16 saved(bf16);
    for (const Tensor& p : model.parameters()) p.set_grad(Tensor());  // each run its own gradients
    const int64_t before = device_backend(sim).memory_stats(0).live_bytes;
    const Tensor loss = training_loss(model, b);
    *kept = device_backend(sim).memory_stats(0).live_bytes - before;
    loss.backward();
    std::vector<float> grads;
    for (const Tensor& p : model.parameters()) {
      const std::vector<float> g = p.grad().to_vector();
      grads.insert(grads.end(), g.begin(), g.end());
    }
    return grads;
  };
  int64_t kept_f32 = 0, kept_bf16 = 0;
  const std::vector<float> f32 = run(false, &kept_f32), bf16 = run(true, &kept_bf16);
  EXPECT_LT(static_cast<double>(kept_bf16), 0.75 * static_cast<double>(kept_f32)) << kept_bf16 << " bytes against " << kept_f32;
  double diff = 0, norm = 0;
  for (size_t i = 0; i < f32.size(); ++i) {
    diff += (bf16[i] - f32[i]) * (bf16[i] - f32[i]);
    norm += f32[i] * f32[i];
  }
  EXPECT_LT(std::sqrt(diff / norm), 2e-2);
  EXPECT_GT(std::sqrt(diff / norm), 0.0) << "bf16 changed nothing: the GEMMs or the saved activations were not rounded";
}

// A bf16 copy is a snapshot, but writing in place to the values it was taken from is still the
// user error it is in f32: backward refuses, naming the op.
TEST(SimTraining, Bf16SavedActivationsStillCatchInPlaceWrites) {
  const Device sim = testing::sim_device();
  const SavedActivationsInBf16 saved(true);
  Philox rng(3);
  const Tensor w = Tensor::randn({64, 64}, rng, 0.0f, 0.1f, sim).set_requires_grad(true);
  const Tensor x = ops::mul(Tensor::randn({128, 64}, rng, 0.0f, 1.0f, sim), 2.0f);  // an activation
  const Tensor y = ops::matmul(x, w);
  x.fill_(1.0f);  // after matmul saved it
  testing::expect_error_mentions([&] { ops::sum(y).backward(); }, {"matmul", "modified in place"});
}

}  // namespace
}  // namespace smelt
