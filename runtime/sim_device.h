// "sim": a simulated device (--device sim). Its memory is ordinary host memory, but tensors on
// it are not host tensors: data() and raw_data() refuse them, so the only way in or out is
// through the device backend's copies, and its ops (ops/sim/) run the CPU's kernels on host
// copies of their arguments. A run on sim gives the CPU's numbers bit for bit while proving that
// nothing above ops/ reaches into device memory: the tests train on it, and a user can check a
// recipe's device path (placement, checkpoints, resumption) without a GPU.
#pragma once
#include <cstdint>

#include "runtime/device_backend.h"

namespace smelt {

DeviceBackend& sim_device_backend();
// Bytes moved between the host and sim since the program started (both directions).
int64_t sim_transferred_bytes();

}  // namespace smelt
