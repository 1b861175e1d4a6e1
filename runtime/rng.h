// Counter-based Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3").
// Block i of a stream is philox(counter = offset + i, key = seed), so any device can produce the
// same numbers for the same (seed, offset) independently, and the state is two integers.
#pragma once
#include <array>
#include <cstdint>

namespace smelt {

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

class Philox {
 public:
  explicit Philox(uint64_t seed = 0, uint64_t offset = 0) : seed_(seed), offset_(offset) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }  // blocks of 4 words consumed so far
  void set_offset(uint64_t offset) { offset_ = offset; }

  std::array<uint32_t, 4> next_block();
  uint32_t next_u32() { return next_block()[0]; }
  uint64_t next_u64();
  float next_uniform();                  // [0, 1)
  void fill_uniform(float* out, int64_t n);  // [0, 1), 4 per block
  void fill_normal(float* out, int64_t n);   // N(0, 1), Box-Muller, 4 per block

 private:
  uint64_t seed_;
  uint64_t offset_;
};

// u32 → float in [0, 1) with 24 random bits.
inline float u32_to_unit_float(uint32_t x) { return static_cast<float>(x >> 8) * (1.0f / 16777216.0f); }

}  // namespace smelt
