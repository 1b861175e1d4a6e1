// Elementwise ops: checks, one call to the device's op table, the backward right beside it.
#include "ops/elementwise.h"

#include "ops/common.h"
#include "ops/reduce.h"
#include "runtime/strided.h"

namespace smelt::ops {
namespace {

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
  const OpTable& B = op_table(a.device(), OpKind::Binary, DType::F32);
  Tensor out = Tensor::empty(broadcast_shapes(a.shape(), b.shape()), DType::F32, a.device());
  B.binary(op, a, b, out);
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
    case UnaryOp::Positive: return "positive";
    case UnaryOp::ClampMin: return "clamp_min";
  }
  return "?";
}

// Which of x and y = op(x) the op's derivative (unary_math.h) reads in a form that bf16's
// rounding leaves accurate: only that one may be saved in bf16 under mixed precision. Sigmoid's
// and tanh's y(1 − y) and 1 − y² cancel near saturation, so their y stays f32.
bool derivative_reads_x(UnaryOp op) {
  return op == UnaryOp::Silu || op == UnaryOp::Gelu || op == UnaryOp::Log || op == UnaryOp::Pow || op == UnaryOp::Abs || op == UnaryOp::ClampMin;
}
bool derivative_reads_y(UnaryOp op) { return op == UnaryOp::Exp || op == UnaryOp::Sqrt || op == UnaryOp::Rsqrt; }

Tensor unary(UnaryOp op, const Tensor& x, float param = 0.0f) {
  const char* name = unary_name(op);
  check_f32(x, name, "x");
  const OpTable& B = op_table(x.device(), OpKind::Unary, DType::F32);
  Tensor xc = contiguous_data(x);
  Tensor out = Tensor::empty(x.shape(), DType::F32, x.device());
  B.unary(op, xc, param, out);
  if (!needs_grad({&x})) return out;
  SavedTensor X(xc, name, derivative_reads_x(op) && is_activation(x)), Y(out.detach(), name, derivative_reads_y(op) && is_activation(x));
  attach_grad_fn(out, name, {x}, [=](const Tensor& g) {
    Tensor gc = contiguous_data(g), xs = X.get(), ys = Y.get();
    Tensor dx = Tensor::empty(gc.shape(), DType::F32, gc.device());
    op_table(gc.device(), OpKind::UnaryBackward, DType::F32).unary_backward(op, xs, ys, gc, param, dx);
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
Tensor positive(const Tensor& x) { return unary(UnaryOp::Positive, x); }
Tensor clamp_min(const Tensor& x, float lo) { return unary(UnaryOp::ClampMin, x, lo); }

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  check_f32(gate, "swiglu", "gate");
  check_f32(up, "swiglu", "up");
  check_same_device(gate, up, "swiglu");
  SMELT_CHECK(gate.shape() == up.shape(), "swiglu: gate ", gate.str(), " and up ", up.str(), " differ in shape");
  const OpTable& B = op_table(gate.device(), OpKind::Swiglu, DType::F32);
  Tensor gc = contiguous_data(gate), uc = contiguous_data(up);
  Tensor out = Tensor::empty(gate.shape(), DType::F32, gate.device());
  B.swiglu(gc, uc, out);
  if (!needs_grad({&gate, &up})) return out;
  SavedTensor G(gc, "swiglu", is_activation(gate)), U(uc, "swiglu", is_activation(up));
  attach_grad_fn(out, "swiglu", {gate, up}, [=](const Tensor& grad) {
    Tensor gr = contiguous_data(grad), gs = G.get(), us = U.get();
    Tensor dgate = Tensor::empty(gs.shape(), DType::F32, gs.device()), dup = Tensor::empty(gs.shape(), DType::F32, gs.device());
    op_table(gr.device(), OpKind::SwigluBackward, DType::F32).swiglu_backward(gs, us, gr, dgate, dup);
    return std::vector<Tensor>{dgate, dup};
  });
  return out;
}

}  // namespace smelt::ops
