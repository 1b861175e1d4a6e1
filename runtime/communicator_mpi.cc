// The MPI communicator (OpenMPI from Debian). Compiled to nothing but "not built" answers when
// the build found no MPI, so that a machine without libopenmpi-dev still builds smelt.
#include "runtime/communicator.h"

#include <cstdio>
#include <cstdlib>

#include "runtime/error.h"

#ifdef SMELT_HAVE_MPI
#include <mpi.h>

#include <algorithm>
#include <climits>

namespace smelt {
namespace {

MPI_Datatype mpi_type(CommType t) {
  switch (t) {
    case CommType::F32: return MPI_FLOAT;
    case CommType::F64: return MPI_DOUBLE;
    case CommType::I64: return MPI_INT64_T;
    case CommType::Byte: return MPI_BYTE;
  }
  return MPI_BYTE;
}

// MPI counts are ints: larger buffers go in pieces of this many values.
constexpr int64_t kMaxPiece = int64_t{1} << 30;

int to_int(int64_t n, int rank, const char* call) {
  SMELT_CHECK(n >= 0 && n <= INT_MAX, "rank ", rank, ": ", call, " of ", n, " values does not fit MPI's int counts");
  return static_cast<int>(n);
}

class MpiCommunicator final : public Communicator {
 public:
  // The world: joins the MPI job.
  MpiCommunicator(int* argc, char*** argv) : world_(true) {
    int provided = 0;
    // Only the main thread talks to MPI; the thread pool computes between collectives.
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) SMELT_FAIL("MPI_Init_thread failed");
    // Errors come back as codes (and become one-line smelt errors) instead of MPI aborting with
    // its own multi-line report.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    comm_ = MPI_COMM_WORLD;
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    local_rank_ = local ? std::atoi(local) : rank_;
  }
  // A part of the world (split).
  MpiCommunicator(MPI_Comm comm, int local_rank) : world_(false), comm_(comm), local_rank_(local_rank) {
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    if (world_) MPI_Finalize();
    else MPI_Comm_free(&comm_);
  }
  std::unique_ptr<Communicator> split(int color, int key) override {
    MPI_Comm part;
    check(MPI_Comm_split(comm_, color, key, &part), "MPI_Comm_split", 1);
    return std::make_unique<MpiCommunicator>(part, local_rank_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  std::string backend() const override { return "mpi"; }

  void all_reduce_sum(void* data, int64_t count, CommType type) override {
    char* p = static_cast<char*>(data);
    for (int64_t done = 0; done < count; done += kMaxPiece) {
      const int n = static_cast<int>(std::min(kMaxPiece, count - done));
      check(MPI_Allreduce(MPI_IN_PLACE, p + done * comm_type_size(type), n, mpi_type(type), MPI_SUM, comm_), "MPI_Allreduce", count);
    }
  }
  void broadcast(void* data, int64_t count, CommType type, int root) override {
    SMELT_CHECK(root >= 0 && root < size_, "rank ", rank_, ": broadcast from rank ", root, " of ", size_);
    char* p = static_cast<char*>(data);
    for (int64_t done = 0; done < count; done += kMaxPiece) {
      const int n = static_cast<int>(std::min(kMaxPiece, count - done));
      check(MPI_Bcast(p + done * comm_type_size(type), n, mpi_type(type), root, comm_), "MPI_Bcast", count);
    }
  }
  void all_gather(const void* in, int64_t count, void* out, CommType type) override {
    const int n = to_int(count, rank_, "MPI_Allgather");
    check(MPI_Allgather(in, n, mpi_type(type), out, n, mpi_type(type), comm_), "MPI_Allgather", count);
  }
  void reduce_scatter_sum(const void* in, void* out, const std::vector<int64_t>& counts, CommType type) override {
    SMELT_CHECK(static_cast<int>(counts.size()) == size_, "rank ", rank_, ": reduce_scatter with ", counts.size(), " counts for ", size_, " ranks");
    std::vector<int> c;
    for (int64_t n : counts) c.push_back(to_int(n, rank_, "MPI_Reduce_scatter"));
    check(MPI_Reduce_scatter(in, out, c.data(), mpi_type(type), MPI_SUM, comm_), "MPI_Reduce_scatter", counts[rank_]);
  }
  void all_to_all(const void* in, const std::vector<int64_t>& send_counts, void* out, const std::vector<int64_t>& recv_counts,
                  CommType type) override {
    SMELT_CHECK(static_cast<int>(send_counts.size()) == size_ && static_cast<int>(recv_counts.size()) == size_, "rank ", rank_,
                ": all_to_all needs one send and one receive count per rank");
    std::vector<int> sc, sd, rc, rd;
    int64_t so = 0, ro = 0;
    for (int p = 0; p < size_; ++p) {
      sc.push_back(to_int(send_counts[p], rank_, "MPI_Alltoallv"));
      sd.push_back(to_int(so, rank_, "MPI_Alltoallv"));
      rc.push_back(to_int(recv_counts[p], rank_, "MPI_Alltoallv"));
      rd.push_back(to_int(ro, rank_, "MPI_Alltoallv"));
      so += send_counts[p];
      ro += recv_counts[p];
    }
    check(MPI_Alltoallv(in, sc.data(), sd.data(), mpi_type(type), out, rc.data(), rd.data(), mpi_type(type), comm_),
          "MPI_Alltoallv", so);
  }
  void barrier() override { check(MPI_Barrier(comm_), "MPI_Barrier", 0); }

 private:
  void check(int code, const char* call, int64_t count) const {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, text, &len);
    SMELT_FAIL("rank ", rank_, " of ", size_, ": ", call, " of ", count, " values failed: ", std::string(text, len));
  }
  bool world_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(int* argc, char*** argv) { return std::make_unique<MpiCommunicator>(argc, argv); }
bool built_with_mpi() { return true; }

void abort_distributed(int code) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  std::fflush(stdout);
  std::fflush(stderr);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

}  // namespace smelt

#else  // no MPI in this build

namespace smelt {
std::unique_ptr<Communicator> make_mpi_communicator(int*, char***) { SMELT_FAIL("smelt was built without MPI (install libopenmpi-dev and rebuild)"); }
bool built_with_mpi() { return false; }
void abort_distributed(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  std::exit(code);
}
}  // namespace smelt

#endif
