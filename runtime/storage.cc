#include "runtime/storage.h"

#include "runtime/device_backend.h"

namespace smelt {

int64_t Storage::live_bytes() { return device_backend(Device::cpu()).memory_stats(0).live_bytes; }
int64_t Storage::peak_live_bytes() { return device_backend(Device::cpu()).memory_stats(0).peak_bytes; }
void Storage::reset_peak_live_bytes() { device_backend(Device::cpu()).reset_peak(0); }
void Storage::trim_cached_blocks() { device_backend(Device::cpu()).trim(0, false); }
void Storage::release_cached_blocks() { device_backend(Device::cpu()).trim(0, true); }

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  data_ = device_backend(device).allocate(nbytes, device.index);
}

Storage::Storage(void* data, size_t nbytes, Device device, std::function<void()> release)
    : data_(data), nbytes_(nbytes), device_(device), release_(std::move(release)) {}

Storage::~Storage() {
  if (release_) release_();
  else device_backend(device_).deallocate(data_, nbytes_, device_.index);
}

}  // namespace smelt
