// The CUDA op table's Philox fill, as ops/cpu/random_ops.cc: block i of the stream is
// philox4x32-10(counter = offset + i, key = seed) (runtime/rng.cc), one thread per block of four
// values, so a GPU makes the host's stream. Uniform values match the host's bit for bit; normal
// ones take Box-Muller in double as the host does, through CUDA's double log, sin and cos (each
// within an ulp or two of the host's libm, far below the float the value is rounded to; a
// rounding boundary can still differ in the last float bit, rarely).
#include <cuda_runtime.h>

#include "ops/cuda/cuda_ops.h"
#include "runtime/cuda_launch.cuh"

namespace smelt {
namespace {

__device__ uint4 philox4x32_10(uint4 c, uint2 k) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u, kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    const uint32_t hi0 = __umulhi(kMul0, c.x), lo0 = kMul0 * c.x;
    const uint32_t hi1 = __umulhi(kMul1, c.z), lo1 = kMul1 * c.z;
    c = make_uint4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    k.x += kWeyl0;
    k.y += kWeyl1;
  }
  return c;
}

__device__ inline float unit_float(uint32_t x) { return static_cast<float>(x >> 8) * (1.0f / 16777216.0f); }

__device__ inline void box_muller(uint32_t a, uint32_t b, float& z0, float& z1) {
  const double u1 = (static_cast<double>(a) + 1.0) / 4294967296.0;  // (0, 1]: the log is finite
  const double u2 = static_cast<double>(b) / 4294967296.0;
  const double r = sqrt(-2.0 * log(u1)), angle = 2.0 * 3.14159265358979323846 * u2;
  z0 = static_cast<float>(r * cos(angle));
  z1 = static_cast<float>(r * sin(angle));
}

__global__ void philox_fill_kernel(float* out, int64_t n, uint64_t seed, uint64_t offset, bool normal, float a, float b) {
  const uint2 key = make_uint2(static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  SMELT_GRID_STRIDE(block, (n + 3) / 4) {
    const uint64_t counter = offset + static_cast<uint64_t>(block);
    const uint4 r = philox4x32_10(make_uint4(static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), 0u, 0u), key);
    float v[4];
    if (normal) {
      box_muller(r.x, r.y, v[0], v[1]);
      box_muller(r.z, r.w, v[2], v[3]);
      for (float& x : v) x = __fadd_rn(a, __fmul_rn(b, x));  // unfused, as the host rounds it
    } else {
      v[0] = unit_float(r.x), v[1] = unit_float(r.y), v[2] = unit_float(r.z), v[3] = unit_float(r.w);
      for (float& x : v) x = __fadd_rn(a, __fmul_rn(b - a, x));
    }
    for (int j = 0; j < 4 && block * 4 + j < n; ++j) out[block * 4 + j] = v[j];
  }
}

}  // namespace

void cuda_random_fill_op(const Tensor& out, uint64_t seed, uint64_t offset, bool normal, float a, float b) {
  const int64_t n = out.numel();
  if (n == 0) return;
  philox_fill_kernel<<<cuda_grid_for((n + 3) / 4), 256, 0, cuda_stream(out)>>>(f32_out(out), n, seed, offset, normal, a, b);
  cuda_check_launch(out, "random_fill");
}

}  // namespace smelt
