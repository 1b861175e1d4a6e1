#include "runtime/storage.h"

#include <malloc.h>

#include <cstdlib>
#include <new>

#include "runtime/block_cache.h"
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
std::atomic<int64_t> g_live{0}, g_peak{0};
std::atomic<int64_t> g_all_time_peak{0};  // never reset: bounds the block cache

void count_allocation(int64_t bytes) {
  const int64_t now = g_live.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  int64_t peak = g_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
  int64_t all_time = g_all_time_peak.load(std::memory_order_relaxed);
  while (now > all_time && !g_all_time_peak.compare_exchange_weak(all_time, now, std::memory_order_relaxed)) {
  }
}
}  // namespace

int64_t Storage::live_bytes() { return g_live.load(std::memory_order_relaxed); }
int64_t Storage::peak_live_bytes() { return g_peak.load(std::memory_order_relaxed); }
void Storage::reset_peak_live_bytes() { g_peak.store(g_live.load(std::memory_order_relaxed), std::memory_order_relaxed); }
void Storage::trim_cached_blocks() { block_cache::trim(); }
void Storage::release_cached_blocks() {
  block_cache::release_all();
  malloc_trim(0);  // and the heap's free pages go back to the system (the trim threshold above keeps them otherwise)
}

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  keep_freed_memory_for_reuse();
  SMELT_CHECK(device.type == DeviceType::CPU, "storage on ", device.str(), " needs the CUDA backend, which this build lacks");
  const size_t rounded = nbytes == 0 ? 64 : (nbytes + 63) / 64 * 64;
  if (rounded >= block_cache::kMinBytes) data_ = block_cache::take(rounded);
  if (!data_) data_ = std::aligned_alloc(64, rounded);
  if (!data_) SMELT_FAIL("out of memory allocating ", nbytes, " bytes");
  count_allocation(static_cast<int64_t>(nbytes));
}

Storage::Storage(void* data, size_t nbytes, Device device, std::function<void()> release)
    : data_(data), nbytes_(nbytes), device_(device), release_(std::move(release)) {}

Storage::~Storage() {
  if (release_) {
    release_();
  } else {
    const size_t rounded = nbytes_ == 0 ? 64 : (nbytes_ + 63) / 64 * 64;
    if (rounded < block_cache::kMinBytes || !block_cache::keep(data_, rounded, g_all_time_peak.load(std::memory_order_relaxed)))
      std::free(data_);
    g_live.fetch_sub(static_cast<int64_t>(nbytes_), std::memory_order_relaxed);
  }
}

}  // namespace smelt
