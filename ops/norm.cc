// rms_norm, rope, softmax and log_softmax: each forward with its backward below it.
#include "ops/norm.h"

#include <cmath>
#include <vector>

#include "ops/common.h"
#include "runtime/thread_pool.h"

namespace smelt::ops {

namespace {

void check_rms_norm_args(const Tensor& x, const Tensor& weight, float eps, const char* op) {
  check_f32(x, op, "x");
  check_f32(weight, op, "weight");
  const int64_t C = x.size(-1);
  SMELT_CHECK(weight.dim() == 1 && weight.size(0) == C, op, ": weight ", weight.str(), " does not match input ", x.str());
  SMELT_CHECK(eps >= 0.0f, op, ": eps must be ≥ 0, got ", eps);
}

// Backward of out = rms_norm(x) · weight, where xc is x's contiguous data and rstd the rows'
// reciprocal RMS from the forward.
void attach_rms_norm_backward(const Tensor& out, const Tensor& x, const Tensor& xc, const Tensor& weight, const Tensor& wc,
                              const Tensor& rstd) {
  const int64_t C = x.size(-1), rows = rstd.numel();
  SavedTensor X(xc, "rms_norm"), W(wc, "rms_norm");
  const bool need_w = weight.requires_grad();
  attach_grad_fn(out, "rms_norm", {x, weight}, [=](const Tensor& g) {
    // dx = r·(w⊙g) − x·r³·mean(w⊙g⊙x);  dw = Σ_rows g⊙x·r
    Tensor gc = contiguous_data(g), xs = X.get(), ws = W.get();
    Tensor dx = Tensor::empty(xs.shape());
    Tensor dw = Tensor::zeros({C});
    const float *pg = gc.data<float>(), *px = xs.data<float>(), *pw = ws.data<float>(), *pr = rstd.data<float>();
    float* pdx = dx.data<float>();
    parallel_for(0, rows, 8, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float *gr = pg + r * C, *xr = px + r * C;
        float* dr = pdx + r * C;
        double dot = 0;
        for (int64_t i = 0; i < C; ++i) dot += static_cast<double>(pw[i]) * gr[i] * xr[i];
        const float rs = pr[r];
        const float coef = static_cast<float>(dot / C) * rs * rs * rs;
        for (int64_t i = 0; i < C; ++i) dr[i] = rs * pw[i] * gr[i] - xr[i] * coef;
      }
    });
    if (need_w) {
      float* pdw = dw.data<float>();
      for (int64_t r = 0; r < rows; ++r) {
        const float *gr = pg + r * C, *xr = px + r * C;
        const float rs = pr[r];
        for (int64_t i = 0; i < C; ++i) pdw[i] += gr[i] * xr[i] * rs;
      }
    }
    return std::vector<Tensor>{dx, need_w ? dw : Tensor()};
  });
}

}  // namespace

Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps) {
  check_rms_norm_args(x, weight, eps, "rms_norm");
  const int64_t C = x.size(-1), rows = x.numel() / std::max<int64_t>(C, 1);
  Tensor xc = contiguous_data(x), wc = contiguous_data(weight);
  Tensor out = Tensor::empty(x.shape());
  Tensor rstd = Tensor::empty({rows});
  kernels_for(x.device()).rms_norm_forward(xc.data<float>(), nullptr, wc.data<float>(), nullptr, out.data<float>(), rstd.data<float>(),
                                           rows, C, eps);
  if (needs_grad({&x, &weight})) attach_rms_norm_backward(out, x, xc, weight, wc, rstd);
  return out;
}

ResidualNorm add_rms_norm(const Tensor& x, const Tensor& y, const Tensor& weight, float eps) {
  check_rms_norm_args(x, weight, eps, "add_rms_norm");
  check_f32(y, "add_rms_norm", "y");
  check_same_device(x, y, "add_rms_norm");
  SMELT_CHECK(x.shape() == y.shape(), "add_rms_norm: x ", x.str(), " and y ", y.str(), " differ in shape");
  const int64_t C = x.size(-1), rows = x.numel() / std::max<int64_t>(C, 1);
  Tensor xc = contiguous_data(x), yc = contiguous_data(y), wc = contiguous_data(weight);
  ResidualNorm r{Tensor::empty(x.shape()), Tensor::empty(x.shape())};
  Tensor rstd = Tensor::empty({rows});
  kernels_for(x.device()).rms_norm_forward(xc.data<float>(), yc.data<float>(), wc.data<float>(), r.sum.data<float>(),
                                           r.normed.data<float>(), rstd.data<float>(), rows, C, eps);
  if (needs_grad({&x, &y})) attach_grad_fn(r.sum, "add", {x, y}, [](const Tensor& g) { return std::vector<Tensor>{g, g}; });
  if (needs_grad({&x, &y, &weight})) attach_rms_norm_backward(r.normed, r.sum, r.sum, weight, wc, rstd);
  return r;
}

namespace {
// cos/sin table [T, D/2] for positions offset..offset+T-1.
void rope_table(int64_t T, int64_t D, float theta, int64_t offset, float scaling, std::vector<float>& cs, std::vector<float>& sn) {
  const int64_t half = D / 2;
  cs.resize(T * half);
  sn.resize(T * half);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < half; ++i) {
      double inv_freq = std::pow(static_cast<double>(theta), -2.0 * i / static_cast<double>(D));
      double angle = static_cast<double>(offset + t) / scaling * inv_freq;
      cs[t * half + i] = static_cast<float>(std::cos(angle));
      sn[t * half + i] = static_cast<float>(std::sin(angle));
    }
}

// Rotates every head vector of x [B, T, H, D] by +angle (sign = 1) or −angle (sign = −1). In
// place when the caller gives x up (`may_overwrite`) and nothing else holds it: rotation needs
// no input once applied, so a copy would only add memory traffic.
Tensor rotate(const Tensor& x, const std::vector<float>& cs, const std::vector<float>& sn, float sign, bool may_overwrite) {
  const bool in_place = may_overwrite && x.is_sole_reference() && x.is_contiguous();
  Tensor xc = contiguous_data(x);
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  Tensor out = in_place ? x.detach() : Tensor::empty(x.shape());
  if (in_place) out.bump_version();
  const float* px = xc.data<float>();
  float* po = out.data<float>();
  parallel_for(0, B * T, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t bt = lo; bt < hi; ++bt) {
      const int64_t t = bt % T;
      const float *c = cs.data() + t * half, *s = sn.data() + t * half;
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
  return out;
}
}  // namespace

namespace {
Tensor rope_impl(const Tensor& x, float theta, int64_t position_offset, float scaling, bool may_overwrite) {
  check_f32(x, "rope", "x");
  SMELT_CHECK(x.dim() == 4, "rope: input must be [batch, seq, heads, head_dim], got ", x.str());
  SMELT_CHECK(x.size(3) % 2 == 0, "rope: head_dim must be even, got ", x.size(3));
  SMELT_CHECK(theta > 0 && scaling > 0, "rope: theta and scaling must be positive (", theta, ", ", scaling, ")");
  auto cs = std::make_shared<std::vector<float>>();
  auto sn = std::make_shared<std::vector<float>>();
  rope_table(x.size(1), x.size(3), theta, position_offset, scaling, *cs, *sn);
  // Rotating x in place keeps its history (the edge below points at x's grad_fn, not its data).
  Tensor out = rotate(x, *cs, *sn, 1.0f, may_overwrite);
  if (needs_grad({&x})) {
    // The gradient reaching here is the engine's own: rotated in place when nothing else holds it.
    attach_grad_fn(out, "rope", {x}, [cs, sn](const Tensor& g) { return std::vector<Tensor>{rotate(g, *cs, *sn, -1.0f, true)}; });
  }
  return out;
}
}  // namespace

Tensor rope(const Tensor& x, float theta, int64_t position_offset, float scaling) {
  return rope_impl(x, theta, position_offset, scaling, false);
}

Tensor rope(Tensor&& x, float theta, int64_t position_offset, float scaling) {
  return rope_impl(x, theta, position_offset, scaling, true);
}

namespace {
Tensor softmax_impl(const Tensor& x, bool log) {
  const char* name = log ? "log_softmax" : "softmax";
  check_f32(x, name, "x");
  SMELT_CHECK(x.dim() >= 1, name, ": needs rank ≥ 1");
  const int64_t C = x.size(-1), rows = x.numel() / std::max<int64_t>(C, 1);
  Tensor xc = contiguous_data(x);
  Tensor out = Tensor::empty(x.shape());
  kernels_for(x.device()).softmax(xc.data<float>(), out.data<float>(), rows, C, log);
  if (!needs_grad({&x})) return out;
  SavedTensor Y(out.detach(), name);
  attach_grad_fn(out, name, {x}, [=](const Tensor& g) {
    // softmax: dx = y ⊙ (g − Σ g⊙y);  log_softmax: dx = g − exp(y) · Σ g
    Tensor gc = contiguous_data(g), ys = Y.get();
    Tensor dx = Tensor::empty(ys.shape());
    const float *pg = gc.data<float>(), *py = ys.data<float>();
    float* pd = dx.data<float>();
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
    return std::vector<Tensor>{dx};
  });
  return out;
}
}  // namespace

Tensor softmax(const Tensor& x) { return softmax_impl(x, false); }
Tensor log_softmax(const Tensor& x) { return softmax_impl(x, true); }

}  // namespace smelt::ops
