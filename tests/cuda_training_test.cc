// Training on a GPU against the CPU (issue 16's parity): a tiny dense and a tiny MoE model take
// 20 optimizer steps on cuda:0 and on the CPU from the same weights and batches. In f32 every
// step's loss is within 1e-4 (relative) of the CPU's; with "precision": "bf16" (GEMM operands
// rounded to bf16, f32 accumulation) within 2e-2, and falling. The same CUDA run twice gives the
// same bits (no float atomics). Skipped, saying so, where no GPU is present.
#include <gtest/gtest.h>

#include <cmath>

#include "optim/trainer.h"
#include "runtime/device_backend.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

ModelConfig tiny(bool moe) {
  ModelConfig c = testing::small_config(48, 32, 64, 2, 4, 2);
  if (moe) {
    c.num_local_experts = 4;
    c.num_experts_per_tok = 2;
    c.router_aux_loss_coef = 0.01;
    c.router_z_loss_coef = 0.001;
  }
  return c;
}

Batch batch(int64_t step, Device device) { return testing::pattern_batch(4, 24, 48, step, 9, device); }

TrainConfig recipe(const std::string& precision) {
  TrainConfig tc;
  tc.steps = 20;
  tc.batch_size = 4;
  tc.seq_len = 24;
  tc.lr = 3e-3;
  tc.warmup_steps = 2;
  tc.grad_clip = 1.0;
  tc.precision = precision;
  return tc;
}

std::vector<double> losses(const ModelConfig& config, Device device, const std::string& precision) {
  Transformer model = Transformer::create(config, 11).to(device);
  Trainer trainer(model, recipe(precision));
  std::vector<double> out;
  for (int64_t s = 0; s < 20; ++s) out.push_back(trainer.step(s, {batch(s, device)}).loss);
  return out;
}

void expect_parity(Device device, bool moe) {
  const ModelConfig c = tiny(moe);
  const std::vector<double> cpu = losses(c, Device::cpu(), "f32"), gpu = losses(c, device, "f32");
  for (size_t s = 0; s < cpu.size(); ++s) EXPECT_NEAR(gpu[s], cpu[s], 1e-4 * std::abs(cpu[s])) << "f32 step " << s + 1;
  EXPECT_EQ(losses(c, device, "f32"), gpu) << "a second run on " << device.str() << " gave other bits";
  const std::vector<double> bf16 = losses(c, device, "bf16");
  for (size_t s = 0; s < cpu.size(); ++s) EXPECT_NEAR(bf16[s], cpu[s], 2e-2 * std::abs(cpu[s])) << "bf16 step " << s + 1;
  EXPECT_LT(bf16.back(), bf16.front()) << "the bf16 loss did not fall";
}

bool have_gpu() { return has_device_backend(DeviceType::CUDA); }
constexpr const char* kNoGpu = "no CUDA GPU here (or a build without CUDA): training not compared with the CPU";

TEST(CudaTraining, DenseModelMatchesTheCpu) {
  if (!have_gpu()) GTEST_SKIP() << kNoGpu;
  expect_parity(Device::cuda(0), false);
}
TEST(CudaTraining, MoeModelMatchesTheCpu) {
  if (!have_gpu()) GTEST_SKIP() << kNoGpu;
  expect_parity(Device::cuda(0), true);
}
// The same checks on the simulated device (the CPU's kernels behind copies) run everywhere: they
// hold the harness itself to account, and the bf16 half checks the CPU's bf16 GEMMs against f32.
TEST(CudaTraining, TheChecksHoldOnTheSimulatedDevice) {
  expect_parity(Device{DeviceType::Sim, 0}, false);
  expect_parity(Device{DeviceType::Sim, 0}, true);
}

}  // namespace
}  // namespace smelt
