// The tests' handle on the "sim" device (runtime/sim_device.h, ops/sim/): built into the
// library, so nothing is registered here.
#pragma once
#include <cstdint>

#include "runtime/device.h"
#include "runtime/sim_device.h"

namespace smelt::testing {

inline Device sim_device() { return Device{DeviceType::Sim, 0}; }
inline int64_t sim_transferred_bytes() { return smelt::sim_transferred_bytes(); }

}  // namespace smelt::testing
