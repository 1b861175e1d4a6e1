// Q4_0X8, Q4_0 with rows interleaved by 8 (layout in runtime/quant.h): the conversions between
// the two, and one row's block read back, for the kernels that need a row (embedding lookups,
// the packed GEMM of prefill).
#include <cstring>

#include "runtime/error.h"
#include "runtime/quant.h"

namespace smelt {
namespace {

constexpr int64_t kQ4Bytes = 18;  // one Q4_0 block: f16 scale, 16 bytes of nibbles

// Where row r (0..7) of a group keeps its scale inside a group block: kX8ScaleOrder inverted.
constexpr int kScaleSlot[kX8Rows] = {0, 4, 1, 5, 2, 6, 3, 7};
static_assert([] {
  for (int s = 0; s < kX8Rows; ++s)
    if (kScaleSlot[kX8ScaleOrder[s]] != s) return false;
  return true;
}());
int scale_slot(int64_t r) { return kScaleSlot[r]; }

void check_shape(int64_t rows, int64_t k) {
  SMELT_CHECK(rows % kX8Rows == 0 && k % kQuantBlock == 0, "q4_0 rows interleaved by 8: ", rows, " × ", k,
              " is not whole groups of 8 rows and blocks of 32");
}

}  // namespace

void q4_0_x8_block(const uint8_t* x8, int64_t row, int64_t k, int64_t b, uint8_t* block) {
  const int64_t group = row / kX8Rows, r = row % kX8Rows;
  const uint8_t* gb = x8 + (group * (k / kQuantBlock) + b) * kX8BlockBytes;
  std::memcpy(block, gb + 2 * scale_slot(r), 2);
  std::memcpy(block + 2, gb + 2 * kX8Rows + 16 * r, 16);
}

void repack_q4_0_x8(const uint8_t* q4_0, uint8_t* x8, int64_t rows, int64_t k) {
  check_shape(rows, k);
  const int64_t blocks = k / kQuantBlock;
  for (int64_t g = 0; g < rows / kX8Rows; ++g)
    for (int64_t b = 0; b < blocks; ++b) {
      uint8_t* out = x8 + (g * blocks + b) * kX8BlockBytes;
      for (int r = 0; r < kX8Rows; ++r) {
        const uint8_t* in = q4_0 + ((g * kX8Rows + r) * blocks + b) * kQ4Bytes;
        std::memcpy(out + 2 * scale_slot(r), in, 2);
        std::memcpy(out + 2 * kX8Rows + 16 * r, in + 2, 16);
      }
    }
}

void unpack_q4_0_x8(const uint8_t* x8, uint8_t* q4_0, int64_t rows, int64_t k) {
  check_shape(rows, k);
  const int64_t blocks = k / kQuantBlock;
  for (int64_t row = 0; row < rows; ++row)
    for (int64_t b = 0; b < blocks; ++b) q4_0_x8_block(x8, row, k, b, q4_0 + (row * blocks + b) * kQ4Bytes);
}

}  // namespace smelt
