// Where a tensor's bytes live. The CPU is always there; other devices exist when a backend for
// them is registered (runtime/device_backend.h): CUDA from ops/cuda/ in CUDA builds, and "sim",
// a simulated device whose memory is reachable only through copies, from the tests.
#pragma once
#include <string>

namespace smelt {

enum class DeviceType { CPU, CUDA, Sim };
constexpr int kDeviceTypeCount = 3;

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  // "cpu", "cuda:0", "sim:1".
  std::string str() const;
  static Device cpu() { return {}; }
  static Device cuda(int index = 0) { return {DeviceType::CUDA, index}; }
  // "cpu", "cuda", "cuda:N", "sim[:N]"; throws a one-line error naming the text otherwise.
  static Device parse(const std::string& text);
};

const char* device_type_name(DeviceType type);

}  // namespace smelt
