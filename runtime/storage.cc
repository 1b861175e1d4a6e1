#include "runtime/storage.h"

#include <malloc.h>

#include <cstdlib>
#include <new>

#include "runtime/error.h"

namespace smelt {

namespace {
// Training allocates and frees the same activation sizes every step. glibc serves large blocks
// with fresh mmaps and returns them on free, so each step would fault in and zero its memory
// again (half the CPU time in the kernel, measured). Keeping freed blocks in the heap lets
// the next step reuse them.
void keep_freed_memory_for_reuse() {
  static const bool done = [] {
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    return true;
  }();
  (void)done;
}
}  // namespace

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  keep_freed_memory_for_reuse();
  SMELT_CHECK(device.type == DeviceType::CPU, "storage on ", device.str(), " needs the CUDA backend, which this build lacks");
  size_t rounded = (nbytes + 63) / 64 * 64;
  data_ = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (!data_) SMELT_FAIL("out of memory allocating ", nbytes, " bytes");
}

Storage::Storage(void* data, size_t nbytes, Device device, std::function<void()> release)
    : data_(data), nbytes_(nbytes), device_(device), release_(std::move(release)) {}

Storage::~Storage() {
  if (release_) release_();
  else std::free(data_);
}

}  // namespace smelt
