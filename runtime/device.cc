#include "runtime/device.h"

#include <cctype>

#include "runtime/error.h"

namespace smelt {

const char* device_type_name(DeviceType type) {
  switch (type) {
    case DeviceType::CPU: return "cpu";
    case DeviceType::CUDA: return "cuda";
    case DeviceType::Sim: return "sim";
  }
  return "?";
}

std::string Device::str() const {
  if (type == DeviceType::CPU) return "cpu";
  return std::string(device_type_name(type)) + ":" + std::to_string(index);
}

Device Device::parse(const std::string& text) {
  const size_t colon = text.find(':');
  const std::string kind = text.substr(0, colon);
  Device d;
  if (kind == "cpu") d.type = DeviceType::CPU;
  else if (kind == "cuda") d.type = DeviceType::CUDA;
  else if (kind == "sim") d.type = DeviceType::Sim;
  else SMELT_FAIL("unknown device '", text, "' (expected cpu, cuda, cuda:N or sim)");
  if (colon != std::string::npos) {
    const std::string digits = text.substr(colon + 1);
    bool ok = !digits.empty() && digits.size() <= 4 && d.type != DeviceType::CPU;
    for (char c : digits) ok = ok && std::isdigit(static_cast<unsigned char>(c));
    SMELT_CHECK(ok, "bad device index in '", text, "' (expected cpu, cuda, cuda:N or sim)");
    d.index = std::stoi(digits);
  }
  return d;
}

}  // namespace smelt
