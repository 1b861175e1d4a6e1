// ggml's tensor types as GGUF files store them: plain floats and the block-quantised formats
// (a block of 32 or 256 values sharing a scale). Layouts follow ggml's definitions
// (ggml-common.h: block_q4_0, block_q4_1, block_q5_0, block_q5_1, block_q8_0, block_q4_K,
// block_q5_K, block_q6_K); every decoder here is checked against the gguf Python package's
// dequantiser in a committed fixture (tests/fixtures/gguf_quants.gguf).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace smelt {

// The numbers are ggml's enum ggml_type (they are what a GGUF tensor record holds).
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  BF16 = 30,
};

struct GgmlTypeInfo {
  GgmlType type;
  const char* name;      // ggml's spelling: "Q4_K"
  int64_t block_values;  // values per block (1 for plain floats)
  int64_t block_bytes;   // bytes per block
};

// The types smelt reads; nullptr for any other number (whose ggml name, where ggml has one, is
// given by ggml_type_name for the error message).
const GgmlTypeInfo* ggml_type_info(uint32_t type);
std::string ggml_type_name(uint32_t type);
// "F32, F16, ..." for messages.
std::string ggml_supported_type_names();
// Parses a --type value ("f32", "q8_0", case-insensitive); throws listing the accepted ones.
GgmlType ggml_type_from_name(const std::string& name);

// Bytes `values` values of the type take (values must be a whole number of blocks).
uint64_t ggml_row_bytes(GgmlType type, int64_t values);

// Decodes `values` values (a whole number of blocks) from src into f32.
void ggml_dequantize(GgmlType type, const uint8_t* src, float* dst, int64_t values);
// Encodes f32 values into the type (F32, F16, BF16, Q8_0, Q4_0, Q4_K: what smelt export writes), with
// ggml's reference quantisers' rounding so llama.cpp reads back what it would have written.
void ggml_quantize(GgmlType type, const float* src, uint8_t* dst, int64_t values);

}  // namespace smelt
