// Collective communication between the processes of one training job (ranks). The launcher
// (OpenMPI's `mpirun`) starts the processes and says who is who; the communicator moves bytes.
// Implementations: one rank (a process on its own: every collective is a copy or nothing), MPI
// (OpenMPI, between processes and hosts; built when libopenmpi-dev is installed). Buffers are
// host memory; the callers (optim/data_parallel) flatten tensors into them.
//
// Every collective must be called by every rank, in the same order, with matching counts; an
// error names this rank and the call, and ends the job (see init_distributed).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/device.h"

namespace smelt {

// What a collective's buffer holds.
enum class CommType { F32, F64, I64, Byte };
size_t comm_type_size(CommType t);

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // This rank's index among the ranks on its host (OpenMPI's OMPI_COMM_WORLD_LOCAL_RANK).
  virtual int local_rank() const = 0;
  virtual std::string backend() const = 0;  // "local", "mpi", "nccl"
  // Where the collectives' buffers must live: host memory (local, MPI) or one GPU's (NCCL).
  virtual Device buffer_device() const { return Device::cpu(); }

  // In-place element-wise sum over ranks: every rank ends with the same `count` sums.
  virtual void all_reduce_sum(void* data, int64_t count, CommType type) = 0;
  // In-place: every rank ends with root's `count` values.
  virtual void broadcast(void* data, int64_t count, CommType type, int root) = 0;
  // Every rank contributes `count` values; `out` receives size()·count of them, rank by rank.
  virtual void all_gather(const void* in, int64_t count, void* out, CommType type) = 0;
  // `in` holds Σ counts values, rank r's part at offset Σ counts[<r]; rank r ends with the
  // element-wise sum over ranks of its part in `out` (counts[r] values).
  virtual void reduce_scatter_sum(const void* in, void* out, const std::vector<int64_t>& counts, CommType type) = 0;
  // Unequal all-to-all: send_counts[p] values from `in` (peer by peer, in rank order) go to peer
  // p; recv_counts[p] values arrive from peer p into `out` (in rank order).
  virtual void all_to_all(const void* in, const std::vector<int64_t>& send_counts, void* out, const std::vector<int64_t>& recv_counts,
                          CommType type) = 0;
  virtual void barrier() = 0;
  // The ranks that pass the same `color` form a new communicator, ordered by `key` (then by
  // rank). A collective: every rank calls it.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;
};

// The job's communicator: one rank unless init_distributed found a launcher.
Communicator& world();
bool is_distributed();  // world().size() > 1

// Called first thing by main(): when the process was started by mpirun (OpenMPI's environment
// says so) it joins the MPI job; otherwise the job is this one process. A launch smelt was not
// built for (mpirun without MPI support) is an error.
void init_distributed(int* argc, char*** argv);
// Leaves the MPI job cleanly (end of main).
void finalize_distributed();
// Ends every rank of the job now with `code` (after an error on this rank, so that no rank
// waits for it in a collective forever).
[[noreturn]] void abort_distributed(int code);

// The MPI implementation (communicator_mpi.cc), or null when smelt was built without MPI.
std::unique_ptr<Communicator> make_mpi_communicator(int* argc, char*** argv);
bool built_with_mpi();

// NCCL between GPUs (runtime/communicator_nccl.cu, in CUDA builds that found libnccl): the same
// ranks as `bootstrap` (whose rank 0 makes NCCL's unique id and broadcasts it), each on GPU
// `gpu`; buffers are that GPU's memory, and every call returns once its result is there.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, int gpu);
bool built_with_nccl();

// Uses `comm` as the world communicator (tests with a fake communicator; nullptr restores the
// one-rank default).
void set_world_for_testing(Communicator* comm);

}  // namespace smelt
