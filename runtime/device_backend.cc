#include "runtime/device_backend.h"

#include <array>
#include <atomic>

#include "runtime/error.h"
#include "runtime/sim_device.h"
#ifdef SMELT_HAVE_CUDA
#include "runtime/cuda_device.h"
#endif

namespace smelt {

DeviceBackend& cpu_device_backend();  // runtime/cpu_device.cc

namespace {
std::array<std::atomic<DeviceBackend*>, kDeviceTypeCount>& registry() {
  static std::array<std::atomic<DeviceBackend*>, kDeviceTypeCount> r{};
  return r;
}
std::atomic<int64_t> g_host_reads{0};
}  // namespace

void register_device_backend(DeviceType type, DeviceBackend* backend) {
  SMELT_CHECK(type != DeviceType::CPU, "the CPU backend is built in and cannot be replaced");
  registry()[static_cast<int>(type)].store(backend);
}

bool has_device_backend(DeviceType type) {
  if (type == DeviceType::CPU || type == DeviceType::Sim || registry()[static_cast<int>(type)].load() != nullptr) return true;
#ifdef SMELT_HAVE_CUDA
  if (type == DeviceType::CUDA) return cuda_device_count() > 0;
#endif
  return false;
}

DeviceBackend& device_backend(Device device) {
  if (device.type == DeviceType::CPU) return cpu_device_backend();
  DeviceBackend* b = registry()[static_cast<int>(device.type)].load();
  if (b) return *b;
  if (device.type == DeviceType::Sim) return sim_device_backend();
#ifdef SMELT_HAVE_CUDA
  if (device.type == DeviceType::CUDA) {
    SMELT_CHECK(cuda_device_count() > 0, "device ", device.str(), ": ", cuda_unavailable_reason());
    SMELT_CHECK(device.index >= 0 && device.index < cuda_device_count(), "device ", device.str(), ": only ", cuda_device_count(),
                " CUDA GPU(s) present");
    return cuda_device_backend();
  }
#endif
  if (device.type == DeviceType::CUDA)
    SMELT_FAIL("device ", device.str(), ": this build has no CUDA backend (rebuild with nvcc present, -DSMELT_CUDA=ON)");
  SMELT_FAIL("device ", device.str(), ": no backend is registered for it");
}

int64_t host_read_count() { return g_host_reads.load(std::memory_order_relaxed); }
void count_host_read() { g_host_reads.fetch_add(1, std::memory_order_relaxed); }

}  // namespace smelt
