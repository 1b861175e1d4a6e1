#include "tools/device_option.h"

#include "runtime/device_backend.h"

namespace smelt::tools {

void add_device_option(CLI::App& cmd, std::string& device) {
  cmd.add_option("--device", device, "Where to compute: cpu, cuda[:N] (a GPU) or sim (CPU kernels behind device copies)")
      ->default_str("cpu");
}

Device chosen_device(const std::string& text) {
  const Device d = Device::parse(text.empty() ? "cpu" : text);
  device_backend(d);  // a missing GPU or a build without CUDA is an error here, before any work
  return d;
}

}  // namespace smelt::tools
