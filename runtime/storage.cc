#include "runtime/storage.h"

#include <cstdlib>
#include <new>

#include "runtime/error.h"

namespace smelt {

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
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
