// Element types a tensor can hold, their sizes and names, and the 16-bit float conversions.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace smelt {

enum class DType : uint8_t { F32, BF16, F16, I32, I64, U8, Bool };

size_t dtype_size(DType t);
// Short lower-case name used in messages ("f32", "bf16", ...).
const char* dtype_name(DType t);
// The safetensors spelling ("F32", "BF16", ...) and its inverse; throws on an unknown name.
const char* dtype_safetensors_name(DType t);
DType dtype_from_safetensors_name(const std::string& name);
bool is_floating(DType t);

// Round-to-nearest-even conversions; NaN stays NaN.
uint16_t f32_to_bf16(float x);
// Exact: a bf16 is the upper half of an f32. Inline, since GEMM packing widens every weight with it.
inline float bf16_to_f32(uint16_t x) {
  const uint32_t bits = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
uint16_t f32_to_f16(float x);
float f16_to_f32(uint16_t x);

}  // namespace smelt
