#include "runtime/communicator.h"

#include <cstdlib>
#include <cstring>

#include "runtime/error.h"

namespace smelt {

size_t comm_type_size(CommType t) {
  switch (t) {
    case CommType::F32: return 4;
    case CommType::F64: return 8;
    case CommType::I64: return 8;
    case CommType::Byte: return 1;
  }
  return 1;
}

namespace {

// A job of one process: sums and broadcasts leave the data as it is, gathers copy.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  std::string backend() const override { return "local"; }
  void all_reduce_sum(void*, int64_t, CommType) override {}
  void broadcast(void*, int64_t, CommType, int root) override { SMELT_CHECK(root == 0, "broadcast from rank ", root, " in a one-rank job"); }
  void all_gather(const void* in, int64_t count, void* out, CommType type) override { copy(in, out, count, type); }
  void reduce_scatter_sum(const void* in, void* out, const std::vector<int64_t>& counts, CommType type) override {
    SMELT_CHECK(counts.size() == 1, "reduce_scatter with ", counts.size(), " counts in a one-rank job");
    copy(in, out, counts[0], type);
  }
  void all_to_all(const void* in, const std::vector<int64_t>& send_counts, void* out, const std::vector<int64_t>& recv_counts,
                  CommType type) override {
    SMELT_CHECK(send_counts.size() == 1 && recv_counts.size() == 1 && send_counts[0] == recv_counts[0],
                "all_to_all counts do not match a one-rank job");
    copy(in, out, send_counts[0], type);
  }
  void barrier() override {}
  std::unique_ptr<Communicator> split(int, int) override { return std::make_unique<LocalCommunicator>(); }

 private:
  static void copy(const void* in, void* out, int64_t count, CommType type) {
    if (in != out && count > 0) std::memcpy(out, in, static_cast<size_t>(count) * comm_type_size(type));
  }
};

LocalCommunicator g_local;
std::unique_ptr<Communicator> g_mpi;
Communicator* g_world = &g_local;

// The number of ranks the launcher started, from OpenMPI's environment (0 when not launched).
int launcher_world_size() {
  const char* n = std::getenv("OMPI_COMM_WORLD_SIZE");
  return n ? std::atoi(n) : 0;
}

}  // namespace

Communicator& world() { return *g_world; }
bool is_distributed() { return g_world->size() > 1; }

void init_distributed(int* argc, char*** argv) {
  if (launcher_world_size() == 0) return;  // not started by mpirun: one process, no MPI at all
  if (!built_with_mpi()) {
    SMELT_CHECK(launcher_world_size() == 1, "started by mpirun with ", launcher_world_size(),
                " ranks, but this smelt was built without MPI (install libopenmpi-dev and rebuild)");
    return;
  }
  g_mpi = make_mpi_communicator(argc, argv);
  g_world = g_mpi.get();
}

void finalize_distributed() {
  g_world = &g_local;
  g_mpi.reset();
}

#ifndef SMELT_HAVE_NCCL
std::unique_ptr<Communicator> make_nccl_communicator(Communicator&, int) {
  SMELT_FAIL("smelt was built without NCCL (a CUDA build finds it in the CUDA toolkit)");
}
bool built_with_nccl() { return false; }
#endif

void set_world_for_testing(Communicator* comm) { g_world = comm ? comm : &g_local; }

}  // namespace smelt
