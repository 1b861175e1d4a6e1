// A reference-counted block of bytes on one device, shared by every view of it. The version
// counter lives here so that an in-place write through any view is seen by all of them.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>

#include "runtime/device.h"

namespace smelt {

class Storage {
 public:
  // Owned, 64-byte aligned, uninitialised memory from the device's backend (runtime/device_backend.h).
  Storage(size_t nbytes, Device device);
  // Borrowed memory (an mmap'd file, say); `release` runs when the last view goes away.
  Storage(void* data, size_t nbytes, Device device, std::function<void()> release);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  // Borrowed memory (the second constructor: a mapped file), not the backend's.
  bool borrowed() const { return static_cast<bool>(release_); }
  uint64_t version() const { return version_.load(std::memory_order_relaxed); }
  void bump_version() { version_.fetch_add(1, std::memory_order_relaxed); }

  // Bytes of owned CPU storage alive now, and the most alive at once since the last reset: what
  // the tensors themselves hold (memory benchmarks compare it with the process's RSS). Other
  // devices report theirs through device_backend(device).memory_stats().
  static int64_t live_bytes();
  static int64_t peak_live_bytes();
  static void reset_peak_live_bytes();
  // Freed blocks of 1 MiB and more are kept for the next tensor of the same size (see
  // runtime/block_cache.h); this frees those of sizes not asked for since the last call.
  // Training loops call it between steps.
  static void trim_cached_blocks();
  // Frees every cached block and returns the heap's free pages to the system (after loading a
  // model for inference, say, whose transient copies would otherwise stay resident).
  static void release_cached_blocks();

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  std::function<void()> release_;
  std::atomic<uint64_t> version_{0};
};

}  // namespace smelt
