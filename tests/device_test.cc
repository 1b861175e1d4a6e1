// Devices and their memory: copies between the host and a device (the simulated "sim" device,
// whose memory only copies reach), factories on a device, host reads counted, and the one-line
// errors for a device this build lacks.
#include <gtest/gtest.h>

#include "ops/backend.h"
#include "ops/ops.h"
#include "runtime/device_backend.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"
#include "tests/support/sim_device.h"

namespace smelt {
namespace {

using testing::sim_device;

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.message();
  }
  return "";
}

TEST(Device, ParsesNamesAndRefusesOthers) {
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_EQ(Device::parse("cuda"), Device::cuda(0));
  EXPECT_EQ(Device::parse("cuda:3"), Device::cuda(3));
  EXPECT_EQ(Device::parse("cuda:3").str(), "cuda:3");
  EXPECT_NE(error_of([] { Device::parse("tpu"); }).find("unknown device 'tpu'"), std::string::npos);
  EXPECT_NE(error_of([] { Device::parse("cuda:x"); }).find("bad device index"), std::string::npos);
  EXPECT_NE(error_of([] { Device::parse("cpu:1"); }).find("bad device index"), std::string::npos);
}

TEST(Device, CudaWithoutABackendIsAOneLineError) {
  if (has_device_backend(DeviceType::CUDA)) GTEST_SKIP() << "a CUDA GPU is present";
  const Tensor t = Tensor::ones({2, 3});
  const std::string msg = error_of([&] { t.to(Device::cuda()); });
  EXPECT_NE(msg.find("cuda:0"), std::string::npos) << msg;
  // A build without CUDA says so; a CUDA build on a machine without a GPU (or driver) says that.
  EXPECT_TRUE(msg.find("no CUDA backend") != std::string::npos || msg.find("CUDA GPU") != std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  const std::string op_msg = error_of([&] { ops::add(t, t); });
  EXPECT_TRUE(op_msg.empty()) << op_msg;  // the CPU itself is fine
}

// The CUDA device backend's memory (runtime/cuda_device.cu): copies both ways, a strided view
// converted to bf16 on the GPU, broadcast copies, fill, the gradient sum, stats, and the
// out-of-memory error. Runs where a GPU is present (scripts/gpu_check.sh), skips elsewhere.
TEST(Device, CudaMemory) {
  if (!has_device_backend(DeviceType::CUDA)) GTEST_SKIP() << "no CUDA GPU here (or a build without CUDA): CUDA memory not exercised";
  const Device gpu = Device::cuda(0);
  const Tensor host = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor on_gpu = host.to(gpu);
  EXPECT_EQ(on_gpu.to_vector(), host.to_vector());
  EXPECT_EQ(ops::transpose(on_gpu, 0, 1).to(DType::BF16).to(Device::cpu()).to_vector(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
  Tensor dst = Tensor::zeros({2, 3}, DType::F32, gpu);
  dst.copy_from(Tensor::from_vector({7, 8, 9}, {3}));
  EXPECT_EQ(dst.to_vector(), (std::vector<float>{7, 8, 9, 7, 8, 9}));
  EXPECT_EQ(Tensor::arange(5, DType::I64, gpu).to_int_vector(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(Tensor::full({3}, -2.5f, DType::F32, gpu).to_vector(), (std::vector<float>{-2.5f, -2.5f, -2.5f}));
  const Tensor sum = Tensor::ones({4}, gpu).clone();
  device_backend(gpu).accumulate(sum, Tensor::full({4}, 2.0f, DType::F32, gpu));
  EXPECT_EQ(sum.to_vector(), (std::vector<float>{3, 3, 3, 3}));
  EXPECT_GT(device_backend(gpu).memory_stats(0).live_bytes, 0);
  const std::string oom = error_of([&] { Tensor::empty({int64_t{1} << 40}, DType::F32, gpu); });
  EXPECT_NE(oom.find("out of memory on cuda:0"), std::string::npos) << oom;
}

TEST(Device, SimMemoryIsReachedOnlyThroughCopies) {
  const Device sim = sim_device();
  const Tensor host = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor on_sim = host.to(sim);
  EXPECT_EQ(on_sim.device(), sim);
  EXPECT_NE(error_of([&] { on_sim.data<float>(); }).find("host access to tensor f32[2, 3] on sim:0"), std::string::npos);
  EXPECT_EQ(on_sim.to_vector(), host.to_vector());
  // A strided view on the device, converted to bf16 there, then brought back.
  const Tensor t = ops::transpose(on_sim, 0, 1).to(DType::BF16);
  EXPECT_EQ(t.device(), sim);
  EXPECT_EQ(t.to(Device::cpu()).to_vector(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
  // Broadcast copy from the host into a device view.
  Tensor dst = Tensor::zeros({2, 3}, DType::F32, sim);
  dst.copy_from(Tensor::from_vector({7, 8, 9}, {3}));
  EXPECT_EQ(dst.to_vector(), (std::vector<float>{7, 8, 9, 7, 8, 9}));
}

TEST(Device, FactoriesOnADeviceGiveTheHostsValues) {
  const Device sim = sim_device();
  EXPECT_EQ(Tensor::zeros({3}, DType::F32, sim).to_vector(), (std::vector<float>{0, 0, 0}));
  EXPECT_EQ(Tensor::full({2}, 2.5f, DType::F32, sim).to_vector(), (std::vector<float>{2.5f, 2.5f}));
  EXPECT_EQ(Tensor::arange(4, DType::I32, sim).to_int_vector(), (std::vector<int64_t>{0, 1, 2, 3}));
  Philox a(7), b(7);
  EXPECT_EQ(Tensor::randn({5, 3}, a, 0.0f, 1.0f, sim).to_vector(), Tensor::randn({5, 3}, b).to_vector());
  Philox c(9), d(9);
  EXPECT_EQ(Tensor::uniform({4}, c, -1, 1, sim).to_vector(), Tensor::uniform({4}, d, -1, 1).to_vector());
  EXPECT_EQ(Tensor::scalar(3.0f, sim).item(), 3.0f);
}

TEST(Device, HostReadsAreCounted) {
  const Device sim = sim_device();
  const Tensor t = Tensor::ones({4}, sim);
  const int64_t before = host_read_count();
  (void)ops::sum(t).item();
  (void)t.to_vector();
  (void)t.to_int_vector();
  EXPECT_EQ(host_read_count() - before, 3);
  (void)t.to(Device::cpu());  // a copy is not a read by the caller
  EXPECT_EQ(host_read_count() - before, 3);
}

TEST(Device, MemoryStatsFollowTheTensors) {
  const Device sim = sim_device();
  const int64_t before = device_backend(sim).memory_stats(0).live_bytes;
  {
    const Tensor t = Tensor::empty({1000}, DType::F32, sim);
    EXPECT_EQ(device_backend(sim).memory_stats(0).live_bytes - before, 4000);
  }
  EXPECT_EQ(device_backend(sim).memory_stats(0).live_bytes, before);
}

TEST(Device, OpsRefuseMixedDevicesAndUnsupportedDtypes) {
  const Device sim = sim_device();
  const Tensor a = Tensor::ones({2}), b = Tensor::ones({2}, sim);
  const std::string mixed = error_of([&] { ops::add(a, b); });
  EXPECT_NE(mixed.find("different devices (cpu and sim:0)"), std::string::npos) << mixed;
  const std::string unsupported = error_of([&] { op_table(sim, OpKind::Softmax, DType::BF16); });
  EXPECT_NE(unsupported.find("op 'softmax' is not supported on sim:0"), std::string::npos) << unsupported;
  EXPECT_NE(unsupported.find("bf16"), std::string::npos) << unsupported;
}

}  // namespace
}  // namespace smelt
