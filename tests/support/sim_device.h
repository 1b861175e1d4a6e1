// "sim": a simulated device for tests. Its memory is ordinary host memory, but tensors on it are
// not host tensors: data() and raw_data() refuse them, so the only way in or out is through the
// device backend's copies. Ops on it run the CPU's kernels on host copies of their arguments
// (ops/backend.h's op table for sim). A model that trains on sim is proof that nothing above
// ops/ reaches into device memory directly.
#pragma once
#include <cstdint>

#include "runtime/device.h"

namespace smelt::testing {

// Registers the sim device (memory and ops) once; returns sim:0.
Device sim_device();
// Bytes moved between the host and sim since the program started (both directions).
int64_t sim_transferred_bytes();

}  // namespace smelt::testing
