// The "sim" device's memory (runtime/sim_device.h).
#include "runtime/sim_device.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "runtime/tensor.h"

namespace smelt {
namespace {

std::atomic<int64_t> g_transferred{0};

// The same memory seen as a CPU tensor: how the sim backend itself computes on it.
Tensor host_alias(const Tensor& t) {
  auto storage = std::make_shared<Storage>(t.storage()->data(), t.storage()->nbytes(), Device::cpu(), [] {});
  return Tensor::view_of(storage, t.shape(), t.strides(), t.offset(), t.dtype());
}

class SimDeviceBackend final : public DeviceBackend {
 public:
  const char* name() const override { return "sim"; }
  void* allocate(size_t bytes, int) override {
    void* p = std::aligned_alloc(64, (bytes + 127) / 64 * 64);
    SMELT_CHECK(p, "out of memory on sim allocating ", bytes, " bytes");
    live_ += static_cast<int64_t>(bytes);
    if (live_ > peak_) peak_ = live_.load();
    return p;
  }
  void deallocate(void* p, size_t bytes, int) override {
    std::free(p);
    live_ -= static_cast<int64_t>(bytes);
  }
  MemoryStats memory_stats(int) const override { return {live_.load(), peak_.load(), 0}; }
  void reset_peak(int) override { peak_ = live_.load(); }
  void trim(int, bool) override {}
  void copy_to_host(void* dst, const void* src, size_t bytes, int) override {
    g_transferred += static_cast<int64_t>(bytes);
    std::memcpy(dst, src, bytes);
  }
  void copy_from_host(void* dst, const void* src, size_t bytes, int) override {
    g_transferred += static_cast<int64_t>(bytes);
    std::memcpy(dst, src, bytes);
  }
  void copy(const Tensor& dst, const Tensor& src) override { host_alias(dst).copy_from(host_alias(src)); }
  void fill(const Tensor& dst, double value) override { host_alias(dst).fill_(static_cast<float>(value)); }
  void accumulate(const Tensor& dst, const Tensor& src) override {
    device_backend(Device::cpu()).accumulate(host_alias(dst), host_alias(src));
  }
  void synchronize(int) override {}

 private:
  std::atomic<int64_t> live_{0}, peak_{0};
};

}  // namespace

DeviceBackend& sim_device_backend() {
  static SimDeviceBackend* const backend = new SimDeviceBackend;  // never destroyed, like the tensors' memory
  return *backend;
}

int64_t sim_transferred_bytes() { return g_transferred.load(); }

}  // namespace smelt
