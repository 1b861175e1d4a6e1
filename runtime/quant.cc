#include "runtime/quant.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/error.h"

namespace smelt {
namespace {

float load_f16(const uint8_t* p) { return f16_to_f32(static_cast<uint16_t>(p[0] | (p[1] << 8))); }
void store_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  p[0] = static_cast<uint8_t>(h & 0xff);
  p[1] = static_cast<uint8_t>(h >> 8);
}

}  // namespace

const float* f16_to_f32_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t h = 0; h < 65536; ++h) t[h] = f16_to_f32(static_cast<uint16_t>(h));
    return t;
  }();
  return table.data();
}

void quantize_block_q8_0(const float* x, uint8_t* b) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_f16(b, d);
  for (int j = 0; j < 32; ++j) b[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::roundf(x[j] * id)));
}

void quantize_block_q4_0(const float* x, uint8_t* b) {
  float amax = 0.0f, max = 0.0f;  // the value of largest magnitude, with its sign
  for (int j = 0; j < 32; ++j)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  const float d = max / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_f16(b, d);
  for (int j = 0; j < 16; ++j) {
    const int lo = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f)));
    const int hi = std::min(15, static_cast<int>(static_cast<int8_t>(x[j + 16] * id + 8.5f)));
    b[2 + j] = static_cast<uint8_t>(lo | (hi << 4));
  }
}

void dequantize_block_q8_0(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(qs[j]) * d;
}

void dequantize_block_q4_0(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>((qs[j] & 0x0F) - 8) * d;
    y[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}

void quantize_blocks(DType type, const float* src, uint8_t* dst, int64_t values) {
  SMELT_CHECK(!is_interleaved(type), "quantize: rows interleaved by 8 are made from whole matrices (repack_x8)");
  const int64_t block = dtype_block_values(type), bytes = quant_block_bytes(type);
  SMELT_CHECK(is_quantized(type) && values % block == 0, "quantize: ", values, " values are not whole blocks of ", dtype_name(type));
  auto encode = type == DType::Q8_0 ? quantize_block_q8_0 : type == DType::Q4_0 ? quantize_block_q4_0 : quantize_block_q4_k;
  for (int64_t i = 0; i < values / block; ++i) encode(src + i * block, dst + i * bytes);
}

void dequantize_blocks(DType type, const uint8_t* src, float* dst, int64_t values) {
  SMELT_CHECK(!is_interleaved(type), "dequantize: rows interleaved by 8 are read through unpack_x8 or x8_block");
  const int64_t block = dtype_block_values(type), bytes = quant_block_bytes(type);
  SMELT_CHECK(is_quantized(type) && values % block == 0, "dequantize: ", values, " values are not whole blocks of ", dtype_name(type));
  auto decode = type == DType::Q8_0 ? dequantize_block_q8_0 : type == DType::Q4_0 ? dequantize_block_q4_0 : dequantize_block_q4_k;
  for (int64_t i = 0; i < values / block; ++i) decode(src + i * bytes, dst + i * block);
}

}  // namespace smelt
