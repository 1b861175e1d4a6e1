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
  SMELT_CHECK(base == DType::Q4_0 || base == DType::Q8_0, "rows interleaved by 8: ", dtype_name(base), " has no interleaved layout");
  SMELT_CHECK(rows % kX8Rows == 0 && k % kQuantBlock == 0, dtype_name(base), " rows interleaved by 8: ", rows, " × ", k,
              " is not whole groups of 8 rows and blocks of 32");
}

// The byte offsets of row r's scale and values inside its group's block b.
struct Slot {
  const uint8_t* group_block;
  int64_t scale, values, value_bytes;
};
Slot slot(DType base, const uint8_t* x8, int64_t row, int64_t k, int64_t b) {
  const int64_t block_bytes = quant_block_bytes(base), value_bytes = block_bytes - 2, r = row % kX8Rows;
  const uint8_t* gb = x8 + ((row / kX8Rows) * (k / kQuantBlock) + b) * kX8Rows * block_bytes;
  return {gb, 2 * kX8ScaleSlot[r], 2 * kX8Rows + value_bytes * r, value_bytes};
}

}  // namespace

void x8_block(DType base, const uint8_t* x8, int64_t row, int64_t k, int64_t b, uint8_t* block) {
  const Slot s = slot(base, x8, row, k, b);
  std::memcpy(block, s.group_block + s.scale, 2);
  std::memcpy(block + 2, s.group_block + s.values, static_cast<size_t>(s.value_bytes));
}

void repack_x8(DType base, const uint8_t* plain, uint8_t* x8, int64_t rows, int64_t k) {
  check_shape(base, rows, k);
  const int64_t blocks = k / kQuantBlock, block_bytes = quant_block_bytes(base);
  for (int64_t row = 0; row < rows; ++row)
    for (int64_t b = 0; b < blocks; ++b) {
      const Slot s = slot(base, x8, row, k, b);
      uint8_t* out = const_cast<uint8_t*>(s.group_block);  // x8 itself: slot() only computes offsets
      const uint8_t* in = plain + (row * blocks + b) * block_bytes;
      std::memcpy(out + s.scale, in, 2);
      std::memcpy(out + s.values, in + 2, static_cast<size_t>(s.value_bytes));
    }
}

void unpack_x8(DType base, const uint8_t* x8, uint8_t* plain, int64_t rows, int64_t k) {
  check_shape(base, rows, k);
  const int64_t blocks = k / kQuantBlock, block_bytes = quant_block_bytes(base);
  for (int64_t row = 0; row < rows; ++row)
    for (int64_t b = 0; b < blocks; ++b) x8_block(base, x8, row, k, b, plain + (row * blocks + b) * block_bytes);
}

}  // namespace smelt
