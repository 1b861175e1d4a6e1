// Element types a tensor can hold, their sizes and names, and the 16-bit float conversions.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace smelt {

// Q8_0, Q4_0 and Q4_K are block-quantised inference weights (runtime/quant.h): a block of 32
// (Q4_K: 256) values shares its scales, so they have no per-element size; dtype_bytes gives a
// run's size in whole blocks. Q4_0X8, Q8_0X8 and Q4_KX8 are Q4_0, Q8_0 and Q4_K with rows
// interleaved in groups of 8 for decoding (runtime/quant.h): in-memory layouts only, never
// written to a file.
enum class DType : uint8_t { F32, BF16, F16, I32, I64, U8, Bool, Q8_0, Q4_0, Q4_K, Q4_0X8, Q8_0X8, Q4_KX8 };

// Bytes per element of a plain dtype (a quantised one has none: use dtype_bytes).
size_t dtype_size(DType t);
bool is_quantized(DType t);
// Q4_0X8, Q8_0X8 and Q4_KX8: rows interleaved by 8 (runtime/quant.h).
bool is_interleaved(DType t);
// Values per block of a quantised dtype (32, or 256 for Q4_K); 1 for the others.
int64_t dtype_block_values(DType t);
// Bytes `values` consecutive elements take (for a quantised dtype, `values` must be whole blocks).
size_t dtype_bytes(DType t, int64_t values);
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
