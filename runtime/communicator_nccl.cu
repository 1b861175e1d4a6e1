// The NCCL communicator: collectives between GPUs, one rank per GPU. Its unique id comes from
// rank 0 through the bootstrap communicator (MPI); unequal all-to-all and unequal reduce-scatter
// are grouped point-to-point calls. Every call runs on the GPU's compute stream and waits for it,
// so that a buffer is ready when the call returns (the trainer's steps are synchronous anyway).
#include "runtime/communicator.h"

#ifdef SMELT_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include "runtime/cuda_device.h"
#include "runtime/error.h"

namespace smelt {
namespace {

ncclDataType_t nccl_type(CommType t) {
  switch (t) {
    case CommType::F32: return ncclFloat32;
    case CommType::F64: return ncclFloat64;
    case CommType::I64: return ncclInt64;
    case CommType::Byte: return ncclUint8;
  }
  return ncclUint8;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, int gpu, int local_rank) : comm_(comm), gpu_(gpu), local_rank_(local_rank) {
    check(ncclCommUserRank(comm_, &rank_), "ncclCommUserRank");
    check(ncclCommCount(comm_, &size_), "ncclCommCount");
  }
  ~NcclCommunicator() override { ncclCommDestroy(comm_); }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  std::string backend() const override { return "nccl"; }
  Device buffer_device() const override { return Device::cuda(gpu_); }

  void all_reduce_sum(void* data, int64_t count, CommType type) override {
    check(ncclAllReduce(data, data, static_cast<size_t>(count), nccl_type(type), ncclSum, comm_, stream()), "ncclAllReduce");
    wait();
  }
  void broadcast(void* data, int64_t count, CommType type, int root) override {
    check(ncclBroadcast(data, data, static_cast<size_t>(count), nccl_type(type), root, comm_, stream()), "ncclBroadcast");
    wait();
  }
  void all_gather(const void* in, int64_t count, void* out, CommType type) override {
    check(ncclAllGather(in, out, static_cast<size_t>(count), nccl_type(type), comm_, stream()), "ncclAllGather");
    wait();
  }
  // Unequal parts: one ncclReduce per rank (rank r the root of its part), grouped.
  void reduce_scatter_sum(const void* in, void* out, const std::vector<int64_t>& counts, CommType type) override {
    SMELT_CHECK(static_cast<int>(counts.size()) == size_, "rank ", rank_, ": reduce_scatter with ", counts.size(), " counts for ", size_, " ranks");
    const char* base = static_cast<const char*>(in);
    size_t offset = 0;
    check(ncclGroupStart(), "ncclGroupStart");
    for (int p = 0; p < size_; ++p) {
      const size_t n = static_cast<size_t>(counts[p]);
      check(ncclReduce(base + offset * comm_type_size(type), p == rank_ ? out : nullptr, n, nccl_type(type), ncclSum, p, comm_, stream()),
            "ncclReduce");
      offset += n;
    }
    check(ncclGroupEnd(), "ncclGroupEnd");
    wait();
  }
  // Unequal all-to-all: a send and a receive per peer, grouped.
  void all_to_all(const void* in, const std::vector<int64_t>& send_counts, void* out, const std::vector<int64_t>& recv_counts,
                  CommType type) override {
    SMELT_CHECK(static_cast<int>(send_counts.size()) == size_ && static_cast<int>(recv_counts.size()) == size_, "rank ", rank_,
                ": all_to_all needs one send and one receive count per rank");
    const size_t width = comm_type_size(type);
    const char* send = static_cast<const char*>(in);
    char* recv = static_cast<char*>(out);
    check(ncclGroupStart(), "ncclGroupStart");
    for (int p = 0; p < size_; ++p) {
      if (send_counts[p] > 0) check(ncclSend(send, static_cast<size_t>(send_counts[p]), nccl_type(type), p, comm_, stream()), "ncclSend");
      if (recv_counts[p] > 0) check(ncclRecv(recv, static_cast<size_t>(recv_counts[p]), nccl_type(type), p, comm_, stream()), "ncclRecv");
      send += static_cast<size_t>(send_counts[p]) * width;
      recv += static_cast<size_t>(recv_counts[p]) * width;
    }
    check(ncclGroupEnd(), "ncclGroupEnd");
    wait();
  }
  void barrier() override {
    void* scratch = nullptr;
    cuda(cudaSetDevice(gpu_), "cudaSetDevice");
    cuda(cudaMallocAsync(&scratch, sizeof(float), stream()), "cudaMallocAsync");
    cuda(cudaMemsetAsync(scratch, 0, sizeof(float), stream()), "cudaMemsetAsync");
    check(ncclAllReduce(scratch, scratch, 1, ncclFloat32, ncclSum, comm_, stream()), "ncclAllReduce (barrier)");
    cuda(cudaFreeAsync(scratch, stream()), "cudaFreeAsync");
    wait();
  }
  std::unique_ptr<Communicator> split(int color, int key) override {
    ncclComm_t part;
    check(ncclCommSplit(comm_, color, key, &part, nullptr), "ncclCommSplit");
    return std::make_unique<NcclCommunicator>(part, gpu_, local_rank_);
  }

 private:
  cudaStream_t stream() const { return static_cast<cudaStream_t>(cuda_stream_handle(gpu_)); }
  void wait() const { cuda(cudaStreamSynchronize(stream()), "cudaStreamSynchronize"); }
  void check(ncclResult_t r, const char* call) const {
    if (r == ncclSuccess) return;
    SMELT_FAIL("rank ", rank_, " of ", size_, " (cuda:", gpu_, "): ", call, " failed: ", ncclGetErrorString(r));
  }
  void cuda(cudaError_t e, const char* call) const {
    if (e != cudaSuccess) SMELT_FAIL("rank ", rank_, " (cuda:", gpu_, "): ", call, " failed: ", cudaGetErrorString(e));
  }
  ncclComm_t comm_;
  int gpu_, local_rank_, rank_ = 0, size_ = 1;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, int gpu) {
  SMELT_CHECK(gpu >= 0 && gpu < cuda_device_count(), "rank ", bootstrap.rank(), ": no GPU cuda:", gpu, " for NCCL (", cuda_device_count(),
              " visible", cuda_device_count() == 0 ? ": " + cuda_unavailable_reason() : std::string(), ")");
  ncclUniqueId id;
  if (bootstrap.rank() == 0) {
    const ncclResult_t r = ncclGetUniqueId(&id);
    SMELT_CHECK(r == ncclSuccess, "rank 0: ncclGetUniqueId failed: ", ncclGetErrorString(r));
  }
  bootstrap.broadcast(&id, sizeof id, CommType::Byte, 0);
  SMELT_CHECK(cudaSetDevice(gpu) == cudaSuccess, "rank ", bootstrap.rank(), ": cudaSetDevice(", gpu, ") failed");
  ncclComm_t comm;
  const ncclResult_t r = ncclCommInitRank(&comm, bootstrap.size(), id, bootstrap.rank());
  SMELT_CHECK(r == ncclSuccess, "rank ", bootstrap.rank(), " (cuda:", gpu, "): ncclCommInitRank failed: ", ncclGetErrorString(r));
  return std::make_unique<NcclCommunicator>(comm, gpu, bootstrap.local_rank());
}

bool built_with_nccl() { return true; }

}  // namespace smelt

#endif  // SMELT_HAVE_NCCL
