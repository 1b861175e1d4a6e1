// Q4_0X8 and Q8_0X8, Q4_0 and Q8_0 with rows interleaved by 8 (layout in runtime/quant.h): the
// conversions between the plain and the interleaved layout, and one row's block read back, for
// the kernels that need a row (embedding lookups, the packed GEMM of prefill).
#include <cstring>

#include "runtime/error.h"
#include "runtime/quant.h"

namespace smelt {
namespace {

static_assert([] {
  for (int s = 0; s < kX8Rows; ++s)
    if (kX8ScaleSlot[kX8ScaleOrder[s]] != s) return false;
  return true;
}(), "kX8ScaleSlot inverts kX8ScaleOrder");

void check_shape(DType base, int64_t rows, int64_t k) {
  SMELT_CHECK(base == DType::Q4_0 || base == DType::Q8_0 || base == DType::Q4_K, "rows interleaved by 8: ", dtype_name(base),
              " has no interleaved layout");
  SMELT_CHECK(rows % kX8Rows == 0 && k % dtype_block_values(base) == 0, dtype_name(base), " rows interleaved by 8: ", rows, " × ", k,
              " is not whole groups of 8 rows and blocks of ", dtype_block_values(base));
}

// Where Q4_KX8's group block (layout in runtime/quant.h) holding super-block b of `row` starts.
int64_t q4_k_group_block(int64_t row, int64_t k, int64_t b) { return ((row / kX8Rows) * (k / kQ4KBlock) + b) * kQ4KX8GroupBytes; }

void q4_k_x8_block(const uint8_t* x8, int64_t row, int64_t k, int64_t b, uint8_t* block) {
  const uint8_t* gb = x8 + q4_k_group_block(row, k, b);
  const int64_t r = row % kX8Rows, slot = kX8ScaleSlot[r];
  std::memcpy(block, gb + 2 * slot, 2);
  std::memcpy(block + 2, gb + 16 + 2 * slot, 2);
  uint8_t scales[8], mins[8];
  for (int s = 0; s < 8; ++s) {
    scales[s] = gb[32 + 8 * s + slot];
    mins[s] = gb[96 + 8 * s + slot];
  }
  pack_q4_k_scales(scales, mins, block + 4);
  std::memcpy(block + 16, gb + 160 + 128 * r, 128);
}

void q4_k_x8_store(const uint8_t* block, uint8_t* x8, int64_t row, int64_t k, int64_t b) {
  uint8_t* gb = x8 + q4_k_group_block(row, k, b);
  const int64_t r = row % kX8Rows, slot = kX8ScaleSlot[r];
  std::memcpy(gb + 2 * slot, block, 2);
  std::memcpy(gb + 16 + 2 * slot, block + 2, 2);
  uint8_t scales[8], mins[8];
  unpack_q4_k_scales(block + 4, scales, mins);
  for (int s = 0; s < 8; ++s) {
    gb[32 + 8 * s + slot] = scales[s];
    gb[96 + 8 * s + slot] = mins[s];
  }
  std::memcpy(gb + 160 + 128 * r, block + 16, 128);
}

// The byte offsets (from the matrix's start) of block b of `row`'s scale and values (Q4_0, Q8_0).
struct Slot {
  int64_t scale, values, value_bytes;
};
Slot slot(DType base, int64_t row, int64_t k, int64_t b) {
  const int64_t block_bytes = quant_block_bytes(base), value_bytes = block_bytes - 2, r = row % kX8Rows;
  const int64_t group_block = ((row / kX8Rows) * (k / kQuantBlock) + b) * kX8Rows * block_bytes;
  return {group_block + 2 * kX8ScaleSlot[r], group_block + 2 * kX8Rows + value_bytes * r, value_bytes};
}

}  // namespace

void x8_block(DType base, const uint8_t* x8, int64_t row, int64_t k, int64_t b, uint8_t* block) {
  if (base == DType::Q4_K) return q4_k_x8_block(x8, row, k, b, block);
  const Slot s = slot(base, row, k, b);
  std::memcpy(block, x8 + s.scale, 2);
  std::memcpy(block + 2, x8 + s.values, static_cast<size_t>(s.value_bytes));
}

void repack_x8(DType base, const uint8_t* plain, uint8_t* x8, int64_t rows, int64_t k) {
  check_shape(base, rows, k);
  if (base == DType::Q4_K) {
    for (int64_t row = 0; row < rows; ++row)
      for (int64_t b = 0; b < k / kQ4KBlock; ++b) q4_k_x8_store(plain + (row * (k / kQ4KBlock) + b) * kQ4KBlockBytes, x8, row, k, b);
    return;
  }
  const int64_t blocks = k / kQuantBlock, block_bytes = quant_block_bytes(base);
  for (int64_t row = 0; row < rows; ++row)
    for (int64_t b = 0; b < blocks; ++b) {
      const Slot s = slot(base, row, k, b);
      const uint8_t* in = plain + (row * blocks + b) * block_bytes;
      std::memcpy(x8 + s.scale, in, 2);
      std::memcpy(x8 + s.values, in + 2, static_cast<size_t>(s.value_bytes));
    }
}

void unpack_x8(DType base, const uint8_t* x8, uint8_t* plain, int64_t rows, int64_t k) {
  check_shape(base, rows, k);
  const int64_t blocks = k / dtype_block_values(base), block_bytes = quant_block_bytes(base);
  for (int64_t row = 0; row < rows; ++row)
    for (int64_t b = 0; b < blocks; ++b) x8_block(base, x8, row, k, b, plain + (row * blocks + b) * block_bytes);
}

}  // namespace smelt
