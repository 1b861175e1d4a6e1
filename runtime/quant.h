// Block-quantised weights (GGUF's layouts, ggml-common.h): every run of 32 values along a
// matrix row shares one f16 scale d.
//   Q8_0: d, then 32 int8 q           (34 bytes; value = q · d)
//   Q4_0: d, then 16 bytes of nibbles (18 bytes; value = (nibble − 8) · d; low nibbles hold the
//         block's values 0..15, high nibbles 16..31)
//   Q4_K: a super-block of 256 values in 8 sub-blocks of 32 (144 bytes): f16 d and dmin, then
//         12 bytes packing each sub-block's 6-bit scale s and 6-bit min m, then 128 bytes of
//         nibbles q (value = d·s·q − dmin·m). Each 32 bytes of nibbles hold two sub-blocks:
//         low nibbles the even one, high nibbles the odd one.
// A tensor of these dtypes is an inference weight: rows along its last dimension, a whole
// number of blocks each. The codecs here are the scalar references (ggml's quantize_row_*_ref
// rounding, so llama.cpp reads back what it would have written); the SIMD dot products that
// decode against them live in ops/cpu/quant_dot-inl.h.
#pragma once
#include <cstdint>

#include "runtime/dtype.h"

namespace smelt {

constexpr int64_t kQuantBlock = 32;    // values per block of Q8_0 and Q4_0, per sub-block of Q4_K
constexpr int64_t kQ4KBlock = 256;     // values per super-block of Q4_K
constexpr int64_t kQ4KBlockBytes = 144;

// Bytes per block (Q4_K: per super-block), for kernels that step through rows themselves.
constexpr int64_t quant_block_bytes(DType type) {
  return type == DType::Q8_0 || type == DType::Q8_0X8 ? 34 : type == DType::Q4_K ? kQ4KBlockBytes : 18;
}

// Encodes / decodes `values` values (a whole number of blocks, dtype_block_values) of a quantised dtype.
void quantize_blocks(DType type, const float* src, uint8_t* dst, int64_t values);
void dequantize_blocks(DType type, const uint8_t* src, float* dst, int64_t values);

// f16 bits → f32 for all 65536 patterns (256 KiB, built once): the dot kernels read each
// block's scale through it, one load instead of a bit-twiddling conversion per 32 values.
const float* f16_to_f32_table();

// One block, for the GGUF codecs and the kernels' tests.
void quantize_block_q8_0(const float* x, uint8_t* block);
void quantize_block_q4_0(const float* x, uint8_t* block);
void dequantize_block_q8_0(const uint8_t* block, float* y);
void dequantize_block_q4_0(const uint8_t* block, float* y);
// Q4_K super-blocks of 256 values (ggml's quantize_row_q4_K_ref: a weighted least-squares fit
// of each sub-block's scale and min, both then quantised to 6 bits against the block's largest).
void quantize_block_q4_k(const float* x, uint8_t* block);
void dequantize_block_q4_k(const uint8_t* block, float* y);
// The 6-bit scales and mins of a Q4_K super-block's 8 sub-blocks, from its 12 packed bytes:
// bytes 0..3 hold the low 6 bits of scales 0..3 (their top 2 bits: scales 4..7's high bits),
// 4..7 the same for the mins, 8..11 the low nibbles of scales and mins 4..7. Inline: the dot
// kernels unpack once per super-block and weight row.
inline void unpack_q4_k_scales(const uint8_t* packed, uint8_t* scales, uint8_t* mins) {
  for (int j = 0; j < 4; ++j) {
    scales[j] = packed[j] & 63;
    mins[j] = packed[j + 4] & 63;
    scales[j + 4] = static_cast<uint8_t>((packed[j + 8] & 0x0F) | ((packed[j] >> 6) << 4));
    mins[j + 4] = static_cast<uint8_t>((packed[j + 8] >> 4) | ((packed[j + 4] >> 6) << 4));
  }
}

// Q4_0X8 / Q8_0X8: a Q4_0 / Q8_0 matrix [rows, k] (rows a multiple of 8) with each group of 8
// rows interleaved block by block, as decoding's dot kernels read it (ops/cpu/quant_dot_x8-inl.h):
// for group g and block b, 8 blocks' bytes at (g·k/32 + b)·8·block bytes: the 8 rows' f16
// scales in the order kX8ScaleOrder (the order the kernels' horizontal sums leave the rows in),
// then the 8 rows' 16 bytes of nibbles (Q4_0) or 32 int8 values (Q8_0), row 0 first. Same bytes
// as the plain type, so the same size and values.
constexpr int64_t kX8Rows = 8;
constexpr int kX8ScaleOrder[kX8Rows] = {0, 2, 4, 6, 1, 3, 5, 7};
constexpr int kX8ScaleSlot[kX8Rows] = {0, 4, 1, 5, 2, 6, 3, 7};  // where row r's scale is: the order inverted
// The plain type of an interleaved one (Q4_0X8 → Q4_0, Q8_0X8 → Q8_0) and back.
constexpr DType x8_base(DType interleaved) {
  return interleaved == DType::Q8_0X8 ? DType::Q8_0 : interleaved == DType::Q4_KX8 ? DType::Q4_K : DType::Q4_0;
}
constexpr DType x8_of(DType base) { return base == DType::Q8_0 ? DType::Q8_0X8 : base == DType::Q4_K ? DType::Q4_KX8 : DType::Q4_0X8; }
// Q4_KX8: per group of 8 rows and super-block, 1184 bytes: the 8 rows' d (f16, kX8ScaleOrder),
// their dmin (same order), then per sub-block s the 8 rows' 6-bit scales (a byte each, same
// order) and then their mins likewise, then the 8 rows' 128 bytes of nibbles, row 0 first.
constexpr int64_t kQ4KX8GroupBytes = 16 + 16 + 64 + 64 + kX8Rows * 128;
// Q4_K's 12 packed bytes of sub-block scales and mins from the unpacked ones.
void pack_q4_k_scales(const uint8_t* scales, const uint8_t* mins, uint8_t* packed);
void repack_x8(DType base, const uint8_t* plain, uint8_t* x8, int64_t rows, int64_t k);
void unpack_x8(DType base, const uint8_t* x8, uint8_t* plain, int64_t rows, int64_t k);
// Block b (Q4_K: super-block b) of row `row` of an interleaved matrix of `base` blocks with k
// values per row, in the plain type's layout (18, 34 or 144 bytes).
void x8_block(DType base, const uint8_t* x8, int64_t row, int64_t k, int64_t b, uint8_t* block);

}  // namespace smelt
