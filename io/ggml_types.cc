#include "io/ggml_types.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>

#include "runtime/dtype.h"
#include "runtime/error.h"
#include "runtime/quant.h"

namespace smelt {
namespace {

constexpr GgmlTypeInfo kTypes[] = {
    {GgmlType::F32, "F32", 1, 4},       {GgmlType::F16, "F16", 1, 2},       {GgmlType::BF16, "BF16", 1, 2},
    {GgmlType::Q8_0, "Q8_0", 32, 34},   {GgmlType::Q4_0, "Q4_0", 32, 18},   {GgmlType::Q4_1, "Q4_1", 32, 20},
    {GgmlType::Q5_0, "Q5_0", 32, 22},   {GgmlType::Q5_1, "Q5_1", 32, 24},   {GgmlType::Q4_K, "Q4_K", 256, 144},
    {GgmlType::Q5_K, "Q5_K", 256, 176}, {GgmlType::Q6_K, "Q6_K", 256, 210},
};

// ggml's names for the types smelt does not read, so a refusal can say which one the file has.
const char* other_type_name(uint32_t type) {
  switch (type) {
    case 9: return "Q8_1";
    case 10: return "Q2_K";
    case 11: return "Q3_K";
    case 15: return "Q8_K";
    case 16: return "IQ2_XXS";
    case 17: return "IQ2_XS";
    case 18: return "IQ3_XXS";
    case 19: return "IQ1_S";
    case 20: return "IQ4_NL";
    case 21: return "IQ3_S";
    case 22: return "IQ2_S";
    case 23: return "IQ4_XS";
    case 24: return "I8";
    case 25: return "I16";
    case 26: return "I32";
    case 27: return "I64";
    case 28: return "F64";
    case 29: return "IQ1_M";
    case 34: return "TQ1_0";
    case 35: return "TQ2_0";
    case 39: return "MXFP4";
    default: return nullptr;
  }
}

uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
float load_f16(const uint8_t* p) { return f16_to_f32(load_u16(p)); }
void store_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  p[0] = static_cast<uint8_t>(h & 0xff);
  p[1] = static_cast<uint8_t>(h >> 8);
}

// ---- 32-value blocks: a scale d (and a minimum m for the _1 formats), 4 or 5 bits per value.
// Low nibbles hold values 0..15 of the block, high nibbles values 16..31; Q5's fifth bits sit
// in a 32-bit mask qh (bit j for value j).

void dequantize_q4_1(const uint8_t* b, float* y) {
  const float d = load_f16(b), m = load_f16(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(qs[j] & 0x0F) * d + m;
    y[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

uint32_t load_u32(const uint8_t* p) { return p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24); }

// Q5_0 and Q5_1 differ only in the minimum (−16·d fixed, or a stored m).
void dequantize_q5(const uint8_t* b, float* y, bool has_min) {
  const float d = load_f16(b);
  const float m = has_min ? load_f16(b + 2) : 0.0f;
  const uint8_t* p = b + (has_min ? 4 : 2);
  const uint32_t qh = load_u32(p);
  const uint8_t* qs = p + 4;
  const int offset = has_min ? 0 : 16;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0x0F) | (((qh >> j) & 1) << 4);
    const int hi = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
    y[j] = static_cast<float>(lo - offset) * d + m;
    y[j + 16] = static_cast<float>(hi - offset) * d + m;
  }
}

// ---- 256-value super-blocks (the K formats). Q4_K is runtime/quant's (smelt keeps weights in
// it). Q5_K: Q4_K's layout (d, dmin, 12 bytes of 6-bit scales and mins for 8 sub-blocks of 32)
// with qh[32], the fifth bits, before the 128 bytes of low nibbles.
void dequantize_q5_k(const uint8_t* b, float* y) {
  const float d = load_f16(b), dmin = load_f16(b + 2);
  uint8_t sc[8], mn[8];
  unpack_q4_k_scales(b + 4, sc, mn);
  const uint8_t* qh = b + 16;
  const uint8_t* q = b + 48;
  for (int group = 0; group < 4; ++group) {  // 64 values: the low then the high nibbles of 32 bytes
    const float d1 = d * sc[2 * group], m1 = dmin * mn[2 * group];
    const float d2 = d * sc[2 * group + 1], m2 = dmin * mn[2 * group + 1];
    for (int l = 0; l < 32; ++l) {
      const int high_lo = ((qh[l] >> (2 * group)) & 1) << 4;
      const int high_hi = ((qh[l] >> (2 * group + 1)) & 1) << 4;
      y[l] = d1 * static_cast<float>((q[l] & 0x0F) + high_lo) - m1;
      y[l + 32] = d2 * static_cast<float>((q[l] >> 4) + high_hi) - m2;
    }
    y += 64;
    q += 32;
  }
}

// Q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16] (one per 16 values), d.
void dequantize_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = load_f16(b + 208);
  for (int half = 0; half < 2; ++half) {  // 128 values each
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * sc[is + 0] * q1;
      y[l + 32] = d * sc[is + 2] * q2;
      y[l + 64] = d * sc[is + 4] * q3;
      y[l + 96] = d * sc[is + 6] * q4;
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

}  // namespace

const GgmlTypeInfo* ggml_type_info(uint32_t type) {
  for (const GgmlTypeInfo& t : kTypes)
    if (static_cast<uint32_t>(t.type) == type) return &t;
  return nullptr;
}

std::string ggml_type_name(uint32_t type) {
  if (const GgmlTypeInfo* t = ggml_type_info(type)) return t->name;
  if (const char* name = other_type_name(type)) return name;
  return "unknown type " + std::to_string(type);
}

std::string ggml_supported_type_names() {
  std::string out;
  for (const GgmlTypeInfo& t : kTypes) out += (out.empty() ? "" : ", ") + std::string(t.name);
  return out;
}

GgmlType ggml_type_from_name(const std::string& name) {
  std::string upper = name;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (const GgmlTypeInfo& t : kTypes)
    if (upper == t.name) return t.type;
  SMELT_FAIL("unknown GGUF tensor type \"", name, "\" (known: ", ggml_supported_type_names(), ")");
}

namespace {
// The type's layout, checked to hold `values` as whole blocks (`what` names the caller).
const GgmlTypeInfo& whole_blocks(GgmlType type, int64_t values, const char* what) {
  const GgmlTypeInfo* t = ggml_type_info(static_cast<uint32_t>(type));
  SMELT_CHECK(t && values % t->block_values == 0, what, ": ", values, " values are not whole blocks of ",
              ggml_type_name(static_cast<uint32_t>(type)));
  return *t;
}
}  // namespace

uint64_t ggml_row_bytes(GgmlType type, int64_t values) {
  const GgmlTypeInfo* t = &whole_blocks(type, values, "ggml_row_bytes");
  return static_cast<uint64_t>(values / t->block_values) * static_cast<uint64_t>(t->block_bytes);
}

void ggml_dequantize(GgmlType type, const uint8_t* src, float* dst, int64_t values) {
  const GgmlTypeInfo* t = &whole_blocks(type, values, "ggml_dequantize");
  const int64_t blocks = values / t->block_values;
  for (int64_t i = 0; i < blocks; ++i) {
    const uint8_t* b = src + i * t->block_bytes;
    float* y = dst + i * t->block_values;
    switch (type) {
      case GgmlType::F32: std::memcpy(y, b, 4); break;
      case GgmlType::F16: *y = load_f16(b); break;
      case GgmlType::BF16: *y = bf16_to_f32(load_u16(b)); break;
      case GgmlType::Q4_0: dequantize_block_q4_0(b, y); break;
      case GgmlType::Q4_1: dequantize_q4_1(b, y); break;
      case GgmlType::Q5_0: dequantize_q5(b, y, false); break;
      case GgmlType::Q5_1: dequantize_q5(b, y, true); break;
      case GgmlType::Q8_0: dequantize_block_q8_0(b, y); break;
      case GgmlType::Q4_K: dequantize_block_q4_k(b, y); break;
      case GgmlType::Q5_K: dequantize_q5_k(b, y); break;
      case GgmlType::Q6_K: dequantize_q6_k(b, y); break;
    }
  }
}

void ggml_quantize(GgmlType type, const float* src, uint8_t* dst, int64_t values) {
  const GgmlTypeInfo* t = &whole_blocks(type, values, "ggml_quantize");
  const int64_t blocks = values / t->block_values;
  for (int64_t i = 0; i < blocks; ++i) {
    const float* x = src + i * t->block_values;
    uint8_t* b = dst + i * t->block_bytes;
    switch (type) {
      case GgmlType::F32: std::memcpy(b, x, 4); break;
      case GgmlType::F16: store_f16(b, *x); break;
      case GgmlType::BF16: {
        const uint16_t h = f32_to_bf16(*x);
        b[0] = static_cast<uint8_t>(h & 0xff);
        b[1] = static_cast<uint8_t>(h >> 8);
        break;
      }
      case GgmlType::Q8_0: quantize_block_q8_0(x, b); break;
      case GgmlType::Q4_0: quantize_block_q4_0(x, b); break;
      case GgmlType::Q4_K: quantize_block_q4_k(x, b); break;
      default: SMELT_FAIL("smelt does not write ", t->name, " (it writes F32, F16, BF16, Q8_0, Q4_0 and Q4_K)");
    }
  }
}

}  // namespace smelt
