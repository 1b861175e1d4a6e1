// The CPU's whole elementwise ops: broadcasting over strided views, threads over chunks, the
// Highway kernels (ops/cpu/elementwise.cc) on each contiguous run.
#include <cmath>

#include "ops/cpu/cpu_ops.h"
#include "ops/unary_math.h"
#include "runtime/strided.h"
#include "runtime/thread_pool.h"

namespace smelt {
namespace {

constexpr int64_t kGrain = 1 << 14;  // elements per parallel chunk

float scalar_binary(BinaryOp op, float a, float b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
  }
  return 0;
}

const float* f32(const Tensor& t) { return static_cast<const float*>(t.device_data()); }
float* f32_out(const Tensor& t) { return static_cast<float*>(t.device_data()); }

}  // namespace

void cpu_binary_op(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  const Shape& out_shape = out.shape();
  float* po = f32_out(out);
  if (a.shape() == out_shape && b.shape() == out_shape && a.is_contiguous() && b.is_contiguous()) {
    const float *pa = f32(a), *pb = f32(b);
    parallel_for(0, out.numel(), kGrain, [&](int64_t lo, int64_t hi) { cpu_binary(op, pa + lo, pb + lo, po + lo, hi - lo); });
    return;
  }
  if (b.numel() == 1 && a.shape() == out_shape && a.is_contiguous()) {
    const float* pa = f32(a);
    const float vb = *f32(b);
    parallel_for(0, out.numel(), kGrain, [&](int64_t lo, int64_t hi) { cpu_binary_scalar(op, pa + lo, vb, po + lo, hi - lo); });
    return;
  }
  // General broadcast: one row (last dim) at a time, vectorised when the row is unit-stride.
  const Shape sa = broadcast_strides(a, out_shape), sb = broadcast_strides(b, out_shape);
  const Shape so = out.strides();
  const float* ba = static_cast<const float*>(a.storage()->data());
  const float* bb = static_cast<const float*>(b.storage()->data());
  float* bo = static_cast<float*>(out.storage()->data());
  const int64_t ia = sa.empty() ? 1 : sa.back(), ib = sb.empty() ? 1 : sb.back();
  for_each_row<3>(out_shape, {&sa, &sb, &so}, {a.offset(), b.offset(), out.offset()}, [&](const std::array<int64_t, 3>& off, int64_t n) {
    const float* ra = ba + off[0];
    const float* rb = bb + off[1];
    float* ro = bo + off[2];
    if (ia == 1 && ib == 1) cpu_binary(op, ra, rb, ro, n);
    else if (ia == 1 && ib == 0) cpu_binary_scalar(op, ra, *rb, ro, n);
    else for (int64_t i = 0; i < n; ++i) ro[i] = scalar_binary(op, ra[i * ia], rb[i * ib]);
  });
}

void cpu_unary_op(UnaryOp op, const Tensor& x, float param, const Tensor& out) {
  const float* px = f32(x);
  float* po = f32_out(out);
  parallel_for(0, out.numel(), kGrain, [&](int64_t lo, int64_t hi) { cpu_unary(op, px + lo, po + lo, hi - lo, param); });
}

void cpu_unary_backward_op(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& g, float param, const Tensor& dx) {
  const float *pg = f32(g), *px = f32(x), *py = f32(y);
  float* pd = f32_out(dx);
  parallel_for(0, dx.numel(), kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) pd[i] = pg[i] * unary_derivative(op, px[i], py[i], param);
  });
}

void cpu_swiglu_op(const Tensor& gate, const Tensor& up, const Tensor& out) {
  const float *pg = f32(gate), *pu = f32(up);
  float* po = f32_out(out);
  parallel_for(0, out.numel(), kGrain, [&](int64_t lo, int64_t hi) {
    cpu_unary(UnaryOp::Silu, pg + lo, po + lo, hi - lo, 0.0f);
    cpu_binary(BinaryOp::Mul, po + lo, pu + lo, po + lo, hi - lo);
  });
}

void cpu_swiglu_backward_rows(const float* gate, const float* up, const float* grad, float* dgate, float* dup, int64_t n) {
  // s = sigmoid(gate) from the SIMD kernel (into dgate's slot), then a plain loop the compiler vectorises
  cpu_unary(UnaryOp::Sigmoid, gate, dgate, n, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    const float x = gate[i], si = dgate[i];
    dup[i] = grad[i] * x * si;
    dgate[i] = grad[i] * up[i] * si * (1.0f + x * (1.0f - si));
  }
}

void cpu_swiglu_backward_op(const Tensor& gate, const Tensor& up, const Tensor& g, const Tensor& dgate, const Tensor& dup) {
  const float *pgr = f32(g), *pgt = f32(gate), *pup = f32(up);
  float *pdg = f32_out(dgate), *pdu = f32_out(dup);
  parallel_for(0, g.numel(), kGrain, [&](int64_t lo, int64_t hi) {
    cpu_swiglu_backward_rows(pgt + lo, pup + lo, pgr + lo, pdg + lo, pdu + lo, hi - lo);
  });
}

}  // namespace smelt
