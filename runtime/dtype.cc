#include "runtime/dtype.h"

#include <cstring>

#include "runtime/error.h"

namespace smelt {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::BF16: case DType::F16: return 2;
    case DType::I64: return 8;
    case DType::U8: case DType::Bool: return 1;
    case DType::Q8_0: case DType::Q4_0: case DType::Q4_K: case DType::Q4_0X8: case DType::Q8_0X8: case DType::Q4_KX8: break;
  }
  SMELT_FAIL("dtype_size: ", dtype_name(t), " is block-quantised (a block of values shares its scales); its sizes are dtype_bytes'");
}

bool is_quantized(DType t) { return t == DType::Q8_0 || t == DType::Q4_0 || t == DType::Q4_K || is_interleaved(t); }

bool is_interleaved(DType t) { return t == DType::Q4_0X8 || t == DType::Q8_0X8 || t == DType::Q4_KX8; }

int64_t dtype_block_values(DType t) { return t == DType::Q4_K || t == DType::Q4_KX8 ? 256 : is_quantized(t) ? 32 : 1; }

size_t dtype_bytes(DType t, int64_t values) {
  if (!is_quantized(t)) return static_cast<size_t>(values) * dtype_size(t);
  const int64_t block = dtype_block_values(t);
  SMELT_CHECK(values % block == 0, dtype_name(t), ": ", values, " values are not whole blocks of ", block);
  // Q4_KX8 keeps its sub-blocks' scales and mins unpacked, a byte each: 148 bytes per 256 values.
  return static_cast<size_t>(values / block) * (t == DType::Q8_0 || t == DType::Q8_0X8 ? 34 : t == DType::Q4_K ? 144 : t == DType::Q4_KX8 ? 148 : 18);
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
    case DType::U8: return "u8";
    case DType::Bool: return "bool";
    case DType::Q8_0: return "q8_0";
    case DType::Q4_0: return "q4_0";
    case DType::Q4_K: return "q4_k";
    case DType::Q4_0X8: return "q4_0 (rows interleaved by 8)";
    case DType::Q8_0X8: return "q8_0 (rows interleaved by 8)";
    case DType::Q4_KX8: return "q4_k (rows interleaved by 8)";
  }
  return "?";
}

const char* dtype_safetensors_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::U8: return "U8";
    case DType::Bool: return "BOOL";
    case DType::Q8_0: case DType::Q4_0: case DType::Q4_K: case DType::Q4_0X8: case DType::Q8_0X8: case DType::Q4_KX8: break;  // safetensors has no quantised types
  }
  return "?";
}

DType dtype_from_safetensors_name(const std::string& name) {
  for (DType t : {DType::F32, DType::BF16, DType::F16, DType::I32, DType::I64, DType::U8, DType::Bool})
    if (name == dtype_safetensors_name(t)) return t;
  SMELT_FAIL("unknown dtype '", name, "' (known: F32, BF16, F16, I32, I64, U8, BOOL)");
}

bool is_floating(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

static uint32_t bits_of(float x) { uint32_t u; std::memcpy(&u, &x, 4); return u; }
static float float_of(uint32_t u) { float x; std::memcpy(&x, &u, 4); return x; }

uint16_t f32_to_bf16(float x) {
  uint32_t u = bits_of(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return static_cast<uint16_t>(u >> 16);
}


uint16_t f32_to_f16(float x) {
  uint32_t u = bits_of(x);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (absu >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow rounds to inf
  if (absu < 0x38800000u) {  // subnormal or zero in f16: scale so the f32 adder rounds for us
    float f = float_of(absu) + 0.5f;  // 0.5 = 2^-1 aligns the f16 subnormal ulp (2^-24) to the f32 ulp
    return static_cast<uint16_t>(sign | (bits_of(f) - 0x3f000000u));
  }
  uint32_t mant_odd = (absu >> 13) & 1u;
  absu += 0xc8000fffu + mant_odd;  // rebias exponent (-112 << 23) and round to nearest even
  return static_cast<uint16_t>(sign | (absu >> 13));
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    // zero or subnormal: value = mant * 2^-24
    float f = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return float_of(bits_of(f) | sign);
  }
  if (exp == 31) return float_of(sign | 0x7f800000u | (mant << 13));
  return float_of(sign | ((exp + 112) << 23) | (mant << 13));
}

}  // namespace smelt
