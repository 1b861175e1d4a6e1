// --device, shared by the commands that compute: where the model's tensors live and its ops run.
// "cpu" (the default), "cuda" or "cuda:N" (a CUDA build on a machine with a GPU), or "sim" (the
// simulated device: the CPU's numbers bit for bit through device-style copies; see
// runtime/sim_device.h). The model, its batches and any teacher move there; checkpoints and
// outputs are written from it.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "runtime/device.h"

namespace smelt::tools {

void add_device_option(CLI::App& cmd, std::string& device);
// The device named (empty: cpu), checked to be usable here: a one-line error that says why not.
Device chosen_device(const std::string& text);

}  // namespace smelt::tools
