// The CPU's indexing ops over contiguous [outer, n, inner] views of the indexed axis. Indices
// are checked here, as they are read (a device backend checks them in its kernels); the error
// names the op's own word for them and the value.
#include <cstring>

#include "ops/cpu/cpu_ops.h"
#include "runtime/quant.h"
#include "runtime/thread_pool.h"

namespace smelt {
namespace {

struct AxisSplit {
  int64_t outer = 1, inner = 1;
};

AxisSplit split_at(const Shape& s, int64_t dim) {
  AxisSplit a;
  for (int64_t i = 0; i < dim; ++i) a.outer *= s[i];
  for (size_t i = dim + 1; i < s.size(); ++i) a.inner *= s[i];
  return a;
}

// Index tensor element i (contiguous i32 or i64) as int64.
int64_t index_at(const Tensor& idx, int64_t i) {
  return idx.dtype() == DType::I64 ? static_cast<const int64_t*>(idx.device_data())[i]
                                   : static_cast<int64_t>(static_cast<const int32_t*>(idx.device_data())[i]);
}

int64_t checked_index(const Tensor& idx, int64_t i, int64_t n, const char* what) {
  const int64_t v = index_at(idx, i);
  SMELT_CHECK(v >= 0 && v < n, what, " ", v, " (position ", i, ") out of range [0, ", n, ")");
  return v;
}

// For each position p of `index` (contiguous, split as [outer, m, inner]) calls fn(p, x_offset).
template <typename Fn>
void for_each_gathered(const Tensor& index, const Shape& x_shape, int64_t dim, const char* what, Fn&& fn) {
  const AxisSplit s = split_at(index.shape(), dim);
  const int64_t m = index.shape()[dim], n = x_shape[dim];
  for (int64_t o = 0; o < s.outer; ++o)
    for (int64_t j = 0; j < m; ++j)
      for (int64_t c = 0; c < s.inner; ++c) {
        const int64_t p = (o * m + j) * s.inner + c;
        fn(p, (o * n + checked_index(index, p, n, what)) * s.inner + c);
      }
}

}  // namespace

void cpu_index_select_op(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out, const char* what) {
  const AxisSplit s = split_at(x.shape(), dim);
  const int64_t n = x.shape()[dim], m = index.numel(), inner = s.inner;
  for (int64_t j = 0; j < m; ++j) checked_index(index, j, n, what);
  float* po = static_cast<float*>(out.device_data());
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(inner, 1));
  if (is_quantized(x.dtype())) {  // a quantised table (inference): rows dequantised
    const uint8_t* px = static_cast<const uint8_t*>(x.device_data());
    parallel_for(0, s.outer * m, grain, [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t row = (t / m) * n + index_at(index, t % m);
        if (!is_interleaved(x.dtype())) {
          dequantize_blocks(x.dtype(), px + dtype_bytes(x.dtype(), row * inner), po + t * inner, inner);
          continue;
        }
        const DType base = x8_base(x.dtype());  // rows interleaved by 8: the row's blocks one by one
        const int64_t block_values = dtype_block_values(base);
        uint8_t block[kQ4KBlockBytes];  // the largest block
        for (int64_t b = 0; b < inner / block_values; ++b) {
          x8_block(base, px, row, inner, b, block);
          dequantize_blocks(base, block, po + t * inner + b * block_values, block_values);
        }
      }
    });
    return;
  }
  if (x.dtype() == DType::BF16) {  // a bf16 table (inference): rows widened to f32
    const uint16_t* px = static_cast<const uint16_t*>(x.device_data());
    parallel_for(0, s.outer * m, grain, [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) {
        const uint16_t* src = px + ((t / m) * n + index_at(index, t % m)) * inner;
        for (int64_t c = 0; c < inner; ++c) po[t * inner + c] = bf16_to_f32(src[c]);
      }
    });
    return;
  }
  const float* px = static_cast<const float*>(x.device_data());
  parallel_for(0, s.outer * m, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t)
      std::memcpy(po + t * inner, px + ((t / m) * n + index_at(index, t % m)) * inner, inner * sizeof(float));
  });
}

void cpu_index_add_op(const Tensor& dx, int64_t dim, const Tensor& index, const Tensor& g) {
  const AxisSplit s = split_at(dx.shape(), dim);
  const int64_t n = dx.shape()[dim], m = index.numel(), inner = s.inner;
  const float* pg = static_cast<const float*>(g.device_data());
  float* pd = static_cast<float*>(dx.device_data());
  // Parallel over `outer` only: several j may hit the same row, so one thread owns each outer
  // slice and adds its rows in order (deterministic).
  parallel_for(0, s.outer, 1, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o)
      for (int64_t j = 0; j < m; ++j) {
        const float* src = pg + (o * m + j) * inner;
        float* dst = pd + (o * n + index_at(index, j)) * inner;
        for (int64_t c = 0; c < inner; ++c) dst[c] += src[c];
      }
  });
}

void cpu_gather_op(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  const float* px = static_cast<const float*>(x.device_data());
  float* po = static_cast<float*>(out.device_data());
  for_each_gathered(index, x.shape(), dim, "gather: index", [&](int64_t p, int64_t xo) { po[p] = px[xo]; });
}

void cpu_scatter_add_op(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  const float* ps = static_cast<const float*>(src.device_data());
  float* po = static_cast<float*>(out.device_data());
  for_each_gathered(index, out.shape(), dim, "scatter_add: index", [&](int64_t p, int64_t xo) { po[xo] += ps[p]; });
}

}  // namespace smelt
