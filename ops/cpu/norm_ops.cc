// The CPU's row-wise ops over the last dimension: RMS norm (optionally of a residual sum), RoPE
// and softmax / log-softmax, forward and backward. Rows run in parallel.
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/cpu_ops.h"
#include "runtime/thread_pool.h"

namespace smelt {
namespace {
const float* f32(const Tensor& t) { return t.defined() ? static_cast<const float*>(t.device_data()) : nullptr; }
float* f32_out(const Tensor& t) { return t.defined() ? static_cast<float*>(t.device_data()) : nullptr; }
int64_t last_dim(const Tensor& t) { return t.dim() == 0 ? 1 : t.size(-1); }
int64_t row_count(const Tensor& t) { return t.numel() / std::max<int64_t>(last_dim(t), 1); }
}  // namespace

void cpu_rms_norm_op(const Tensor& x, const Tensor& residual, const Tensor& w, float eps, const Tensor& sum, const Tensor& out,
                     const Tensor& rstd) {
  cpu_rms_norm_forward(f32(x), f32(residual), f32(w), f32_out(sum), f32_out(out), f32_out(rstd), row_count(x), last_dim(x), eps);
}

void cpu_rms_norm_backward_op(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& g, const Tensor& dx, const Tensor& dw) {
  // dx = r·(w⊙g) − x·r³·mean(w⊙g⊙x);  dw = Σ_rows g⊙x·r
  const int64_t C = last_dim(x), rows = row_count(x);
  const float *pg = f32(g), *px = f32(x), *pw = f32(w), *pr = f32(rstd);
  float* pdx = f32_out(dx);
  parallel_for(0, rows, 8, [&](int64_t r0, int64_t r1) {
    std::vector<float> wg(static_cast<size_t>(C));
    for (int64_t r = r0; r < r1; ++r) {
      const float *gr = pg + r * C, *xr = px + r * C;
      float* dr = pdx + r * C;
      const float rs = pr[r];
      cpu_binary(BinaryOp::Mul, pw, gr, wg.data(), C);
      const float coef = cpu_dot(wg.data(), xr, C) / static_cast<float>(C) * rs * rs * rs;
      cpu_binary_scalar(BinaryOp::Mul, wg.data(), rs, dr, C);
      cpu_axpy(-coef, xr, dr, C);
    }
  });
  if (!dw.defined()) return;
  // Column blocks in parallel, rows in order within each: no two threads add to one element.
  float* pdw = f32_out(dw);
  parallel_for(0, C, 64, [&](int64_t c0, int64_t c1) {
    std::vector<float> gx(static_cast<size_t>(c1 - c0));
    std::fill(pdw + c0, pdw + c1, 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
      cpu_binary(BinaryOp::Mul, pg + r * C + c0, px + r * C + c0, gx.data(), c1 - c0);
      cpu_axpy(pr[r], gx.data(), pdw + c0, c1 - c0);
    }
  });
}

void cpu_rope_op(const Tensor& x, const Tensor& cos, const Tensor& sin, float sign, const Tensor& out) {
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  const float *px = f32(x), *pc = f32(cos), *ps = f32(sin);
  float* po = f32_out(out);  // may be x itself: each pair is read before it is written
  parallel_for(0, B * T, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t bt = lo; bt < hi; ++bt) {
      const int64_t t = bt % T;
      const float *c = pc + t * half, *s = ps + t * half;
      for (int64_t h = 0; h < H; ++h) {
        const float* xi = px + (bt * H + h) * D;
        float* yi = po + (bt * H + h) * D;
        for (int64_t i = 0; i < half; ++i) {
          const float a = xi[i], b = xi[i + half], si = sign * s[i];
          yi[i] = a * c[i] - b * si;
          yi[i + half] = b * c[i] + a * si;
        }
      }
    }
  });
}

void cpu_softmax_op(const Tensor& x, bool log, const Tensor& out, const Tensor& lse) {
  cpu_softmax(f32(x), f32_out(out), row_count(x), last_dim(x), log, f32_out(lse));
}

void cpu_softmax_backward_op(const Tensor& y, const Tensor& g, bool log, const Tensor& dx) {
  const int64_t C = last_dim(y), rows = row_count(y);
  const float *pg = f32(g), *py = f32(y);
  float* pd = f32_out(dx);
  parallel_for(0, rows, 8, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float *gr = pg + r * C, *yr = py + r * C;
      float* dr = pd + r * C;
      double acc = 0;
      for (int64_t i = 0; i < C; ++i) acc += log ? gr[i] : gr[i] * yr[i];
      const float s = static_cast<float>(acc);
      for (int64_t i = 0; i < C; ++i) dr[i] = log ? gr[i] - std::exp(yr[i]) * s : yr[i] * (gr[i] - s);
    }
  });
}

}  // namespace smelt
