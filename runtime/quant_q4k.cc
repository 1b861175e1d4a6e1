// Q4_K's codec (layout in runtime/quant.h). The encoder follows ggml's reference rounding step
// for step (quantize_row_q4_K_ref: same float operations in the same order), so that a model
// smelt quantises is byte for byte the file llama.cpp's quantiser would write; the test
// fixture tests/fixtures/quantize_q4_k.bin holds ggml's own output for comparison.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/quant.h"

namespace smelt {
namespace {

constexpr int kSubBlocks = kQ4KBlock / kQuantBlock;  // 8
constexpr int kMaxLevel = 15;                         // 4-bit values 0..15
constexpr int kMaxScale = 63;                         // 6-bit scales and mins

// Rounds to the nearest integer, ties to even, for |v| < 2^22: adding 1.5·2^23 leaves the
// integer in the mantissa's low bits (ggml's nearest_int; lrintf would agree, slower).
int nearest_int(float v) {
  const float shifted = v + 12582912.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  return (bits & 0x007fffff) - 0x00400000;
}

int clamp_level(int l, int top) { return std::max(0, std::min(top, l)); }

float load_f16(const uint8_t* p) { return f16_to_f32(static_cast<uint16_t>(p[0] | (p[1] << 8))); }
void store_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  p[0] = static_cast<uint8_t>(h & 0xff);
  p[1] = static_cast<uint8_t>(h >> 8);
}

// One sub-block's levels L (0..15) with scale and min such that x ≈ scale·L − min_out, fitted
// by weighted least squares: start from the plain min/max grid, then try 21 slightly different
// grids (the level count nudged by −1 .. +1) and keep whichever error is lowest (ggml's
// make_qkx2_quants with rmin −1, rdelta 0.1, nstep 20, squared error).
float fit_sub_block(const float* x, const float* w, uint8_t* L, float* min_out) {
  constexpr int n = kQuantBlock;
  float min = x[0], max = x[0], sum_w = w[0], sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    std::fill(L, L + n, 0);
    *min_out = -min;
    return 0.0f;
  }
  float iscale = kMaxLevel / (max - min), scale = 1 / iscale, best_error = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = static_cast<uint8_t>(clamp_level(nearest_int(iscale * (x[i] - min)), kMaxLevel));
    const float diff = scale * L[i] + min - x[i];
    best_error += w[i] * (diff * diff);
  }
  uint8_t trial[n];
  for (int step = 0; step <= 20; ++step) {
    iscale = (-1.0f + 0.1f * step + kMaxLevel) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clamp_level(nearest_int(iscale * (x[i] - min)), kMaxLevel);
      trial[i] = static_cast<uint8_t>(l);
      sum_l += w[i] * l;
      sum_l2 += w[i] * l * l;
      sum_xl += w[i] * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (!(D > 0)) continue;
    float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D, this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
    if (this_min > 0) {
      this_min = 0;
      this_scale = sum_xl / sum_l2;
    }
    float error = 0;
    for (int i = 0; i < n; ++i) {
      const float diff = this_scale * trial[i] + this_min - x[i];
      error += w[i] * (diff * diff);
    }
    if (error < best_error) {
      std::copy(trial, trial + n, L);
      best_error = error;
      scale = this_scale;
      min = this_min;
    }
  }
  *min_out = -min;
  return scale;
}

}  // namespace

// Packs 8 six-bit scales and mins into 12 bytes (unpack_q4_k_scales' layout).
void pack_q4_k_scales(const uint8_t* scales, const uint8_t* mins, uint8_t* packed) {
  for (int j = 0; j < 4; ++j) {
    packed[j] = static_cast<uint8_t>(scales[j] | ((scales[j + 4] >> 4) << 6));
    packed[j + 4] = static_cast<uint8_t>(mins[j] | ((mins[j + 4] >> 4) << 6));
    packed[j + 8] = static_cast<uint8_t>((scales[j + 4] & 0x0F) | ((mins[j + 4] & 0x0F) << 4));
  }
}

void quantize_block_q4_k(const float* x, uint8_t* b) {
  uint8_t L[kQ4KBlock];
  float scales[kSubBlocks], mins[kSubBlocks], max_scale = 0, max_min = 0;
  for (int j = 0; j < kSubBlocks; ++j) {
    const float* xs = x + kQuantBlock * j;
    // Each value weighted by its magnitude plus the sub-block's RMS: large values matter more.
    float sum_x2 = 0, weights[kQuantBlock];
    for (int l = 0; l < kQuantBlock; ++l) sum_x2 += xs[l] * xs[l];
    const float rms = std::sqrt(sum_x2 / kQuantBlock);
    for (int l = 0; l < kQuantBlock; ++l) weights[l] = rms + std::fabs(xs[l]);
    scales[j] = fit_sub_block(xs, weights, L + kQuantBlock * j, &mins[j]);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  // The scales and mins as 6-bit multiples of the largest over 63.
  const float inv_scale = max_scale > 0 ? kMaxScale / max_scale : 0.0f, inv_min = max_min > 0 ? kMaxScale / max_min : 0.0f;
  uint8_t ls[kSubBlocks], lm[kSubBlocks];
  for (int j = 0; j < kSubBlocks; ++j) {
    ls[j] = std::min<uint8_t>(kMaxScale, static_cast<uint8_t>(nearest_int(inv_scale * scales[j])));
    lm[j] = std::min<uint8_t>(kMaxScale, static_cast<uint8_t>(nearest_int(inv_min * mins[j])));
  }
  store_f16(b, max_scale / kMaxScale);
  store_f16(b + 2, max_min / kMaxScale);
  pack_q4_k_scales(ls, lm, b + 4);
  // The levels again against the scales as stored (a sub-block whose scale rounded to 0 keeps
  // the fit's levels: they decode to −min whatever they are).
  const float d = load_f16(b), dmin = load_f16(b + 2);
  for (int j = 0; j < kSubBlocks; ++j) {
    const float dj = d * ls[j];
    if (!dj) continue;
    const float mj = dmin * lm[j];
    for (int i = 0; i < kQuantBlock; ++i)
      L[kQuantBlock * j + i] = static_cast<uint8_t>(clamp_level(nearest_int((x[kQuantBlock * j + i] + mj) / dj), kMaxLevel));
  }
  uint8_t* q = b + 16;
  for (int j = 0; j < kQ4KBlock; j += 2 * kQuantBlock, q += kQuantBlock)
    for (int i = 0; i < kQuantBlock; ++i) q[i] = static_cast<uint8_t>(L[j + i] | (L[j + i + kQuantBlock] << 4));
}

void dequantize_block_q4_k(const uint8_t* b, float* y) {
  const float d = load_f16(b), dmin = load_f16(b + 2);
  uint8_t scales[kSubBlocks], mins[kSubBlocks];
  unpack_q4_k_scales(b + 4, scales, mins);
  const uint8_t* q = b + 16;
  for (int j = 0; j < kSubBlocks; j += 2, q += kQuantBlock, y += 2 * kQuantBlock) {
    const float d1 = d * scales[j], m1 = dmin * mins[j], d2 = d * scales[j + 1], m2 = dmin * mins[j + 1];
    for (int i = 0; i < kQuantBlock; ++i) {
      y[i] = d1 * static_cast<float>(q[i] & 0x0F) - m1;
      y[i + kQuantBlock] = d2 * static_cast<float>(q[i] >> 4) - m2;
    }
  }
}

}  // namespace smelt
