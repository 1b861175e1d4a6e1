#include "runtime/rng.h"

#include <cmath>

namespace smelt {

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = static_cast<uint64_t>(kMul0) * c[0];
    uint64_t p1 = static_cast<uint64_t>(kMul1) * c[2];
    uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c = {hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
    k[0] += kWeyl0;
    k[1] += kWeyl1;
  }
  return c;
}

std::array<uint32_t, 4> Philox::next_block() {
  std::array<uint32_t, 4> ctr = {static_cast<uint32_t>(offset_), static_cast<uint32_t>(offset_ >> 32), 0, 0};
  std::array<uint32_t, 2> key = {static_cast<uint32_t>(seed_), static_cast<uint32_t>(seed_ >> 32)};
  ++offset_;
  return philox4x32_10(ctr, key);
}

uint64_t Philox::next_u64() {
  auto b = next_block();
  return (static_cast<uint64_t>(b[0]) << 32) | b[1];
}

float Philox::next_uniform() { return u32_to_unit_float(next_block()[0]); }

void Philox::fill_uniform(float* out, int64_t n) {
  for (int64_t i = 0; i < n; i += 4) {
    auto b = next_block();
    for (int64_t j = 0; j < 4 && i + j < n; ++j) out[i + j] = u32_to_unit_float(b[j]);
  }
}

void Philox::fill_normal(float* out, int64_t n) {
  for (int64_t i = 0; i < n; i += 4) {
    auto b = next_block();
    for (int pair = 0; pair < 2; ++pair) {
      // u1 in (0, 1] so the log is finite.
      double u1 = (static_cast<double>(b[2 * pair]) + 1.0) / 4294967296.0;
      double u2 = static_cast<double>(b[2 * pair + 1]) / 4294967296.0;
      double r = std::sqrt(-2.0 * std::log(u1));
      double a = 2.0 * M_PI * u2;
      if (i + 2 * pair < n) out[i + 2 * pair] = static_cast<float>(r * std::cos(a));
      if (i + 2 * pair + 1 < n) out[i + 2 * pair + 1] = static_cast<float>(r * std::sin(a));
    }
  }
}

}  // namespace smelt
