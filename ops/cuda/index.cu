// The CUDA op table's indexing ops, as ops/cpu/index_ops.cc, over contiguous [outer, n, inner]
// views of the indexed axis. Indices are checked in the kernels (the lowest bad position is
// reported, then raised with the CPU's words). The adds repeat bit for bit and match the CPU's
// order: index_add sums each destination row over its positions in order (a stable bucket sort
// first, buckets.cuh); scatter_add walks one (outer, column) line per thread, in order.
#include <cuda_runtime.h>

#include "ops/common.h"
#include "ops/cuda/buckets.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/device_index.cuh"
#include "runtime/cuda_launch.cuh"

namespace smelt {
namespace {

__device__ inline float widen(float v) { return v; }
__device__ inline float widen(uint16_t bf16) { return __uint_as_float(static_cast<unsigned>(bf16) << 16); }

// out[t, c] = x[(t / m) · n + index[t % m], c] for t < outer · m (x f32 or a bf16 table).
template <typename T>
__global__ void index_select_kernel(const T* x, IndexView index, float* out, int64_t n, int64_t m, int64_t inner, int64_t total,
                                    unsigned long long* bad) {
  SMELT_GRID_STRIDE(e, total) {
    const int64_t t = e / inner, c = e % inner, j = t % m, row = index[j];
    if (row < 0 || row >= n) {
      report_bad_position(bad, j);
      out[e] = 0.0f;
      continue;
    }
    out[e] = widen(x[((t / m) * n + row) * inner + c]);
  }
}

// dx[o, r, :] += g[o, j, :] over the positions j of row r, in order (order/offsets: the rows'
// buckets). One block per (outer, row) pair, threads along the row.
__global__ void index_add_kernel(float* dx, const float* g, const int64_t* order, const int64_t* offsets, int64_t n, int64_t m,
                                 int64_t inner, int64_t pairs) {
  for (int64_t pair = blockIdx.x; pair < pairs; pair += gridDim.x) {
    const int64_t o = pair / n, r = pair % n, lo = offsets[r], hi = offsets[r + 1];
    if (lo == hi) continue;
    for (int64_t c = threadIdx.x; c < inner; c += blockDim.x) {
      float* dst = dx + (o * n + r) * inner + c;
      float acc = *dst;
      for (int64_t i = lo; i < hi; ++i) acc += g[(o * m + order[i]) * inner + c];
      *dst = acc;
    }
  }
}

// out[p] = x at index[p] along the axis, p over index's [outer, m, inner].
__global__ void gather_kernel(const float* x, IndexView index, float* out, int64_t n, int64_t m, int64_t inner, int64_t total,
                              unsigned long long* bad) {
  SMELT_GRID_STRIDE(p, total) {
    const int64_t v = index[p];
    if (v < 0 || v >= n) {
      report_bad_position(bad, p);
      out[p] = 0.0f;
      continue;
    }
    out[p] = x[((p / inner / m) * n + v) * inner + p % inner];
  }
}

// out at index[p] += src[p]: one thread per (outer, column) line, j in order, so positions that
// meet in one place add in the CPU's order (no atomics).
__global__ void scatter_add_kernel(float* out, IndexView index, const float* src, int64_t n, int64_t m, int64_t inner, int64_t lines,
                                   unsigned long long* bad) {
  SMELT_GRID_STRIDE(line, lines) {
    const int64_t o = line / inner, c = line % inner;
    for (int64_t j = 0; j < m; ++j) {
      const int64_t p = (o * m + j) * inner + c, v = index[p];
      if (v < 0 || v >= n) {
        report_bad_position(bad, p);
        continue;
      }
      out[(o * n + v) * inner + c] += src[p];
    }
  }
}

// Raises the CPU's error for the lowest bad position the kernels reported, if any.
void raise_bad_index(const Tensor& on, const Tensor& index, int64_t n, const char* what, const char* op) {
  const int64_t p = cuda_first_bad_position(on, op);
  if (p < 0) return;
  SMELT_FAIL(what, " ", cuda_read_index(index, p, op), " (position ", p, ") out of range [0, ", n, ")");
}

int block_count(int64_t pairs) { return static_cast<int>(std::min<int64_t>(pairs, 65535 * 4)); }

}  // namespace

void cuda_index_select_op(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out, const char* what) {
  const ops::AxisView v = ops::axis_view(x.shape(), dim);
  const int64_t m = index.numel(), total = out.numel();
  if (total == 0) return;
  unsigned long long* bad = cuda_bad_position_slot(out, "index_select");
  const cudaStream_t s = cuda_stream(out);
  if (x.dtype() == DType::BF16) {
    index_select_kernel<<<cuda_grid_for(total), 256, 0, s>>>(static_cast<const uint16_t*>(x.device_data()), index_view(index), f32_out(out),
                                                             v.n, m, v.inner, total, bad);
  } else {
    index_select_kernel<<<cuda_grid_for(total), 256, 0, s>>>(f32(x), index_view(index), f32_out(out), v.n, m, v.inner, total, bad);
  }
  cuda_check_launch(out, "index_select");
  raise_bad_index(out, index, v.n, what, "index_select");
}

void cuda_index_add_op(const Tensor& dx, int64_t dim, const Tensor& index, const Tensor& g) {
  const ops::AxisView v = ops::axis_view(dx.shape(), dim);
  const int64_t m = index.numel(), pairs = v.outer * v.n;
  if (m == 0 || pairs == 0 || v.inner == 0) return;
  // The forward checked these indices; the sort trusts them.
  const Tensor offsets = Tensor::empty({v.n + 2}, DType::I64, dx.device()), order = Tensor::empty({m}, DType::I64, dx.device());
  auto* po = static_cast<int64_t*>(offsets.device_data());
  auto* pr = static_cast<int64_t*>(order.device_data());
  cuda_stable_buckets(index_view(index), m, v.n, po, pr, dx, "index_add");
  index_add_kernel<<<block_count(pairs), 128, 0, cuda_stream(dx)>>>(f32_out(dx), f32(g), pr, po, v.n, m, v.inner, pairs);
  cuda_check_launch(dx, "index_add");
}

void cuda_gather_op(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  const int64_t n = x.size(dim), m = index.size(dim), total = index.numel();
  if (total == 0) return;
  const ops::AxisView v = ops::axis_view(index.shape(), dim);
  unsigned long long* bad = cuda_bad_position_slot(out, "gather");
  gather_kernel<<<cuda_grid_for(total), 256, 0, cuda_stream(out)>>>(f32(x), index_view(index), f32_out(out), n, m, v.inner, total, bad);
  cuda_check_launch(out, "gather");
  raise_bad_index(out, index, n, "gather: index", "gather");
}

void cuda_scatter_add_op(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  const int64_t n = out.size(dim), m = index.size(dim);
  const ops::AxisView v = ops::axis_view(index.shape(), dim);
  const int64_t lines = v.outer * v.inner;
  if (lines == 0 || m == 0) return;
  unsigned long long* bad = cuda_bad_position_slot(out, "scatter_add");
  scatter_add_kernel<<<cuda_grid_for(lines), 256, 0, cuda_stream(out)>>>(f32_out(out), index_view(index), f32(src), n, m, v.inner, lines,
                                                                          bad);
  cuda_check_launch(out, "scatter_add");
  raise_bad_index(out, index, n, "scatter_add: index", "scatter_add");
}

}  // namespace smelt
