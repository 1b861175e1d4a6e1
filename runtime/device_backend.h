// What a device offers the runtime: memory, copies, fill and synchronisation (ggml's buffer
// interface, kept small). The ops a device computes are registered separately, one layer up
// (ops/backend.h); this part is all that storage, tensors and autograd need, so it lives here.
//
// Every device has one backend, registered once by type. The CPU's is always present; CUDA's is
// registered by ops/cuda/ in CUDA builds; a test registers a simulated device ("sim") whose
// memory only copies can reach. Asking for a device with no backend is a one-line error naming
// the device.
//
// Synchronising reads: Tensor::item(), to_vector() and to_int_vector() are the only calls that
// bring a device's values to the host for the caller; each counts one host read
// (host_read_count), so tests can check that a training step reads back once.
#pragma once
#include <cstddef>
#include <cstdint>

#include "runtime/device.h"

namespace smelt {

class Tensor;

struct MemoryStats {
  int64_t live_bytes = 0;    // held by tensors now
  int64_t peak_bytes = 0;    // most held at once since reset_peak
  int64_t cached_bytes = 0;  // freed blocks kept by the allocator for reuse
};

class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;
  virtual const char* name() const = 0;

  // ---- memory (device-local addresses; never dereferenced outside the backend) ----
  // At least `bytes` (64-byte aligned); throws naming the bytes asked and the device.
  virtual void* allocate(size_t bytes, int index) = 0;
  virtual void deallocate(void* ptr, size_t bytes, int index) = 0;
  virtual MemoryStats memory_stats(int index) const = 0;
  virtual void reset_peak(int index) = 0;
  // Frees cached blocks of sizes not asked for since the previous trim (called between steps);
  // with `all`, every cached block.
  virtual void trim(int index, bool all) = 0;

  // ---- copies ----
  // Contiguous bytes between host memory and this device.
  virtual void copy_to_host(void* host_dst, const void* src, size_t bytes, int index) = 0;
  virtual void copy_from_host(void* dst, const void* host_src, size_t bytes, int index) = 0;
  // dst ← src elementwise, both on this device: any strides, src broadcast to dst's shape, the
  // dtype converted (round to nearest even into bf16/f16; floats truncate into integers).
  virtual void copy(const Tensor& dst, const Tensor& src) = 0;
  virtual void fill(const Tensor& dst, double value) = 0;
  // dst += src, both contiguous f32 of one shape: the backward engine's gradient sum (the one
  // piece of arithmetic autograd needs, so it does not reach up into ops/).
  virtual void accumulate(const Tensor& dst, const Tensor& src) = 0;
  // Waits for the work queued on the device.
  virtual void synchronize(int index) = 0;
};

// Registers `backend` (not owned; it must outlive every tensor of its type) for `type`.
void register_device_backend(DeviceType type, DeviceBackend* backend);
bool has_device_backend(DeviceType type);
// The backend of `device`; throws "… cuda:0: this build has no CUDA backend" and the like.
DeviceBackend& device_backend(Device device);

// Host reads (item, to_vector, to_int_vector) since the program started.
int64_t host_read_count();
void count_host_read();

}  // namespace smelt
