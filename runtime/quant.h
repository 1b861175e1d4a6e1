// Block-quantised weights (GGUF's layouts, ggml-common.h): every run of 32 values along a
// matrix row shares one f16 scale d.
//   Q8_0: d, then 32 int8 q           (34 bytes; value = q · d)
//   Q4_0: d, then 16 bytes of nibbles (18 bytes; value = (nibble − 8) · d; low nibbles hold the
//         block's values 0..15, high nibbles 16..31)
// A tensor of these dtypes is an inference weight: rows along its last dimension, a whole
// number of blocks each. The codecs here are the scalar references (ggml's quantize_row_*_ref
// rounding, so llama.cpp reads back what it would have written); the SIMD dot products that
// decode against them live in ops/cpu/quant_dot-inl.h.
#pragma once
#include <cstdint>

#include "runtime/dtype.h"

namespace smelt {

constexpr int64_t kQuantBlock = 32;  // values per block of Q8_0 and Q4_0

// Bytes per block (the scale included), for kernels that step through rows themselves.
constexpr int64_t quant_block_bytes(DType type) { return type == DType::Q8_0 ? 34 : 18; }

// Encodes / decodes `values` values (a whole number of blocks) of a quantised dtype.
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

}  // namespace smelt
