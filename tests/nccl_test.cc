// The NCCL communicator on the GPUs this machine has: a one-rank communicator bootstrapped by
// the one-process world (NCCL's own id exchange and calls run for real), its collectives on
// device buffers, and the bucketed tensor all-reduce through a device bucket. Skips, saying why,
// without NCCL in the build or without a GPU. (Several ranks: run under mpirun with GPUs.)
#include <gtest/gtest.h>

#include "runtime/communicator.h"
#include "runtime/device_backend.h"
#include "runtime/tensor.h"
#include "runtime/tensor_collectives.h"
#ifdef SMELT_HAVE_CUDA
#include "runtime/cuda_device.h"
#endif

namespace smelt {
namespace {

TEST(Nccl, OneRankCollectivesOnTheGpu) {
  if (!built_with_nccl()) GTEST_SKIP() << "smelt was built without NCCL (a CUDA build with libnccl)";
#ifdef SMELT_HAVE_CUDA
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU: " << cuda_unavailable_reason();
  const std::unique_ptr<Communicator> nccl = make_nccl_communicator(world(), 0);
  ASSERT_EQ(nccl->size(), world().size());
  EXPECT_EQ(nccl->buffer_device(), Device::cuda(0));
  const Tensor t = Tensor::from_vector({1, 2, 3, 4}, {4}, Device::cuda(0));
  nccl->all_reduce_sum(t.device_data(), 4, CommType::F32);
  EXPECT_EQ(t.to_vector(), (std::vector<float>{1, 2, 3, 4}));  // a sum over one rank
  const Tensor out = Tensor::zeros({4}, DType::F32, Device::cuda(0));
  nccl->all_to_all(t.device_data(), {4}, out.device_data(), {4}, CommType::F32);
  EXPECT_EQ(out.to_vector(), (std::vector<float>{1, 2, 3, 4}));
  nccl->all_gather(t.device_data(), 4, out.device_data(), CommType::F32);
  EXPECT_EQ(out.to_vector(), (std::vector<float>{1, 2, 3, 4}));
  nccl->barrier();
  const std::unique_ptr<Communicator> part = nccl->split(0, 0);
  EXPECT_EQ(part->size(), 1);
  std::vector<Tensor> grads = {Tensor::from_vector({5, 6}, {2}, Device::cuda(0)), Tensor::from_vector({7}, {1}, Device::cuda(0))};
  all_reduce_sum(grads, *nccl, 2);
  EXPECT_EQ(grads[0].to_vector(), (std::vector<float>{5, 6}));
#else
  GTEST_SKIP() << "a build without CUDA";
#endif
}

}  // namespace
}  // namespace smelt
