// Elementwise ops: forward through the kernel table, backward formulas right beside them.
#include "ops/elementwise.h"

#include <cmath>

#include "ops/common.h"
#include "ops/reduce.h"
#include "runtime/strided.h"
#include "runtime/thread_pool.h"

namespace smelt::ops {
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

const char* binary_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return "add";
    case BinaryOp::Sub: return "sub";
    case BinaryOp::Mul: return "mul";
    case BinaryOp::Div: return "div";
  }
  return "?";
}

Tensor binary_forward(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = binary_name(op);
  check_f32(a, name, "a");
  check_f32(b, name, "b");
  check_same_device(a, b, name);
  const KernelTable& K = kernels_for(a.device());
  const Shape out_shape = broadcast_shapes(a.shape(), b.shape());
  Tensor out = Tensor::empty(out_shape);
  float* po = out.data<float>();
  if (a.shape() == out_shape && b.shape() == out_shape && a.is_contiguous() && b.is_contiguous()) {
    const float* pa = a.data<float>();
    const float* pb = b.data<float>();
    parallel_for(0, out.numel(), kGrain, [&](int64_t lo, int64_t hi) { K.binary(op, pa + lo, pb + lo, po + lo, hi - lo); });
    return out;
  }
  if (b.numel() == 1 && a.shape() == out_shape && a.is_contiguous()) {
    const float* pa = a.data<float>();
    const float vb = b.item();
    parallel_for(0, out.numel(), kGrain, [&](int64_t lo, int64_t hi) { K.binary_scalar(op, pa + lo, vb, po + lo, hi - lo); });
    return out;
  }
  // General broadcast: one row (last dim) at a time, vectorised when the row is unit-stride.
  const Shape sa = broadcast_strides(a, out_shape), sb = broadcast_strides(b, out_shape);
  const Shape so = out.strides();
  const float* ba = static_cast<const float*>(a.storage()->data());
  const float* bb = static_cast<const float*>(b.storage()->data());
  const int64_t ia = sa.empty() ? 1 : sa.back(), ib = sb.empty() ? 1 : sb.back();
  for_each_row<3>(out_shape, {&sa, &sb, &so}, {a.offset(), b.offset(), 0}, [&](const std::array<int64_t, 3>& off, int64_t n) {
    const float* ra = ba + off[0];
    const float* rb = bb + off[1];
    float* ro = po + off[2];
    if (ia == 1 && ib == 1) K.binary(op, ra, rb, ro, n);
    else if (ia == 1 && ib == 0) K.binary_scalar(op, ra, *rb, ro, n);
    else for (int64_t i = 0; i < n; ++i) ro[i] = scalar_binary(op, ra[i * ia], rb[i * ib]);
  });
  return out;
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(op, a, b);
  if (!needs_grad({&a, &b})) return out;
  const Shape sa = a.shape(), sb = b.shape();
  switch (op) {
    case BinaryOp::Add:
      attach_grad_fn(out, "add", {a, b}, [sa, sb](const Tensor& g) { return std::vector<Tensor>{sum_to(g, sa), sum_to(g, sb)}; });
      break;
    case BinaryOp::Sub:
      attach_grad_fn(out, "sub", {a, b}, [sa, sb](const Tensor& g) { return std::vector<Tensor>{sum_to(g, sa), sum_to(neg(g), sb)}; });
      break;
    case BinaryOp::Mul: {
      SavedTensor A(a, "mul"), B(b, "mul");
      bool need_a = a.requires_grad(), need_b = b.requires_grad();
      attach_grad_fn(out, "mul", {a, b}, [=](const Tensor& g) {
        return std::vector<Tensor>{need_a ? sum_to(mul(g, B.get()), sa) : Tensor(), need_b ? sum_to(mul(g, A.get()), sb) : Tensor()};
      });
      break;
    }
    case BinaryOp::Div: {
      SavedTensor A(a, "div"), B(b, "div");
      bool need_b = b.requires_grad();
      attach_grad_fn(out, "div", {a, b}, [=](const Tensor& g) {
        Tensor ga = div(g, B.get());
        // d(a/b)/db = -a/b^2 = -(g/b) * (a/b)
        Tensor gb = need_b ? sum_to(neg(mul(ga, div(A.get(), B.get()))), sb) : Tensor();
        return std::vector<Tensor>{sum_to(ga, sa), gb};
      });
      break;
    }
  }
  return out;
}

const char* unary_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::Neg: return "neg";
    case UnaryOp::Exp: return "exp";
    case UnaryOp::Log: return "log";
    case UnaryOp::Sqrt: return "sqrt";
    case UnaryOp::Rsqrt: return "rsqrt";
    case UnaryOp::Silu: return "silu";
    case UnaryOp::Gelu: return "gelu";
    case UnaryOp::Sigmoid: return "sigmoid";
    case UnaryOp::Tanh: return "tanh";
    case UnaryOp::Pow: return "pow";
    case UnaryOp::AddScalar: return "add_scalar";
    case UnaryOp::MulScalar: return "mul_scalar";
    case UnaryOp::Abs: return "abs";
  }
  return "?";
}

// d(op(x))/dx at one element, given x, y = op(x) and the op's scalar parameter.
float unary_derivative(UnaryOp op, float x, float y, float p) {
  switch (op) {
    case UnaryOp::Neg: return -1.0f;
    case UnaryOp::Exp: return y;
    case UnaryOp::Log: return 1.0f / x;
    case UnaryOp::Sqrt: return 0.5f / y;
    case UnaryOp::Rsqrt: return -0.5f * y * y * y;
    case UnaryOp::Sigmoid: return y * (1.0f - y);
    case UnaryOp::Tanh: return 1.0f - y * y;
    case UnaryOp::Silu: {
      float s = 1.0f / (1.0f + std::exp(-x));
      return s * (1.0f + x * (1.0f - s));
    }
    case UnaryOp::Gelu: {
      const float c0 = 0.7978845608028654f, c1 = 0.044715f;
      float t = std::tanh(c0 * (x + c1 * x * x * x));
      return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * c0 * (1.0f + 3.0f * c1 * x * x);
    }
    case UnaryOp::Pow: return p * std::pow(x, p - 1.0f);
    case UnaryOp::AddScalar: return 1.0f;
    case UnaryOp::MulScalar: return p;
    case UnaryOp::Abs: return x > 0 ? 1.0f : (x < 0 ? -1.0f : 0.0f);
  }
  return 0;
}

Tensor unary(UnaryOp op, const Tensor& x, float param = 0.0f) {
  const char* name = unary_name(op);
  check_f32(x, name, "x");
  const KernelTable& K = kernels_for(x.device());
  Tensor xc = contiguous_data(x);
  Tensor out = Tensor::empty(x.shape());
  const float* px = xc.data<float>();
  float* po = out.data<float>();
  parallel_for(0, out.numel(), kGrain, [&](int64_t lo, int64_t hi) { K.unary(op, px + lo, po + lo, hi - lo, param); });
  if (!needs_grad({&x})) return out;
  SavedTensor X(xc, name), Y(out.detach(), name);
  attach_grad_fn(out, name, {x}, [=](const Tensor& g) {
    Tensor gc = contiguous_data(g), xs = X.get(), ys = Y.get();
    Tensor dx = Tensor::empty(gc.shape());
    const float *pg = gc.data<float>(), *pxx = xs.data<float>(), *py = ys.data<float>();
    float* pd = dx.data<float>();
    parallel_for(0, dx.numel(), kGrain, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) pd[i] = pg[i] * unary_derivative(op, pxx[i], py[i], param);
    });
    return std::vector<Tensor>{dx};
  });
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Div, a, b); }
Tensor add(const Tensor& a, float s) { return unary(UnaryOp::AddScalar, a, s); }
Tensor mul(const Tensor& a, float s) { return unary(UnaryOp::MulScalar, a, s); }
Tensor neg(const Tensor& x) { return unary(UnaryOp::Neg, x); }
Tensor exp(const Tensor& x) { return unary(UnaryOp::Exp, x); }
Tensor log(const Tensor& x) { return unary(UnaryOp::Log, x); }
Tensor sqrt(const Tensor& x) { return unary(UnaryOp::Sqrt, x); }
Tensor rsqrt(const Tensor& x) { return unary(UnaryOp::Rsqrt, x); }
Tensor abs(const Tensor& x) { return unary(UnaryOp::Abs, x); }
Tensor pow(const Tensor& x, float e) { return unary(UnaryOp::Pow, x, e); }
Tensor sigmoid(const Tensor& x) { return unary(UnaryOp::Sigmoid, x); }
Tensor tanh(const Tensor& x) { return unary(UnaryOp::Tanh, x); }
Tensor silu(const Tensor& x) { return unary(UnaryOp::Silu, x); }
Tensor gelu(const Tensor& x) { return unary(UnaryOp::Gelu, x); }

void swiglu_backward(const KernelTable& K, const float* gate, const float* up, const float* grad, float* dgate, float* dup, int64_t n) {
  // s = sigmoid(gate) from the SIMD kernel (into dgate's slot), then a plain loop the compiler vectorises
  K.unary(UnaryOp::Sigmoid, gate, dgate, n, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    const float x = gate[i], si = dgate[i];
    dup[i] = grad[i] * x * si;
    dgate[i] = grad[i] * up[i] * si * (1.0f + x * (1.0f - si));
  }
}

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  check_f32(gate, "swiglu", "gate");
  check_f32(up, "swiglu", "up");
  SMELT_CHECK(gate.shape() == up.shape(), "swiglu: gate ", gate.str(), " and up ", up.str(), " differ in shape");
  Tensor gc = contiguous_data(gate), uc = contiguous_data(up);
  Tensor out = Tensor::empty(gate.shape());
  const float *pg = gc.data<float>(), *pu = uc.data<float>();
  float* po = out.data<float>();
  const KernelTable& K = kernels_for(gate.device());
  parallel_for(0, out.numel(), kGrain, [&](int64_t lo, int64_t hi) {
    K.unary(UnaryOp::Silu, pg + lo, po + lo, hi - lo, 0.0f);
    K.binary(BinaryOp::Mul, po + lo, pu + lo, po + lo, hi - lo);
  });
  if (!needs_grad({&gate, &up})) return out;
  SavedTensor G(gc, "swiglu"), U(uc, "swiglu");
  attach_grad_fn(out, "swiglu", {gate, up}, [=](const Tensor& grad) {
    Tensor gr = contiguous_data(grad), gs = G.get(), us = U.get();
    Tensor dgate = Tensor::empty(gs.shape()), dup = Tensor::empty(gs.shape());
    const float *pgr = gr.data<float>(), *pgt = gs.data<float>(), *pup = us.data<float>();
    float *pdg = dgate.data<float>(), *pdu = dup.data<float>();
    const KernelTable& K = kernels_for(gr.device());
    parallel_for(0, gr.numel(), kGrain, [&](int64_t lo, int64_t hi) {
      swiglu_backward(K, pgt + lo, pup + lo, pgr + lo, pdg + lo, pdu + lo, hi - lo);
    });
    return std::vector<Tensor>{dgate, dup};
  });
  return out;
}

}  // namespace smelt::ops
