// Where a tensor's bytes live. CPU today; CUDA joins through the same kernel table (ops/backend.h).
#pragma once
#include <string>

namespace smelt {

enum class DeviceType { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  std::string str() const { return type == DeviceType::CPU ? "cpu" : "cuda:" + std::to_string(index); }
  static Device cpu() { return {}; }
};

}  // namespace smelt
