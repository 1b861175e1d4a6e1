// CPU elementwise kernels (binary, unary, axpy, dot) for f32, compiled for every SIMD target
// Highway knows and dispatched at run time. Tails shorter than a vector go through a padded
// buffer so that they use exactly the same arithmetic as the body.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/cpu/elementwise.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep (must precede highway.h)
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"

#include <cmath>
#include <cstring>

#include "ops/cpu/cpu_kernels.h"

HWY_BEFORE_NAMESPACE();
namespace smelt {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Applies `vec_fn(d, v...)` to n elements; the tail is padded with `pad` to a full vector.
template <class D, class F>
HWY_INLINE void map1(D d, const float* x, float* out, int64_t n, F vec_fn) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(vec_fn(hn::LoadU(d, x + i)), d, out + i);
  if (i < n) {
    HWY_ALIGN float buf[hn::MaxLanes(d)];
    for (int64_t j = 0; j < N; ++j) buf[j] = 1.0f;  // 1 keeps log/rsqrt/div finite in unused lanes
    std::memcpy(buf, x + i, (n - i) * sizeof(float));
    hn::Store(vec_fn(hn::Load(d, buf)), d, buf);
    std::memcpy(out + i, buf, (n - i) * sizeof(float));
  }
}

template <class D, class F>
HWY_INLINE void map2(D d, const float* a, const float* b, float* out, int64_t n, F vec_fn) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(vec_fn(hn::LoadU(d, a + i), hn::LoadU(d, b + i)), d, out + i);
  if (i < n) {
    HWY_ALIGN float ba[hn::MaxLanes(d)];
    HWY_ALIGN float bb[hn::MaxLanes(d)];
    for (int64_t j = 0; j < N; ++j) ba[j] = bb[j] = 1.0f;
    std::memcpy(ba, a + i, (n - i) * sizeof(float));
    std::memcpy(bb, b + i, (n - i) * sizeof(float));
    hn::Store(vec_fn(hn::Load(d, ba), hn::Load(d, bb)), d, ba);
    std::memcpy(out + i, ba, (n - i) * sizeof(float));
  }
}

template <class D, class V>
HWY_INLINE V apply_binary(D d, BinaryOp op, V a, V b) {
  switch (op) {
    case BinaryOp::Add: return hn::Add(a, b);
    case BinaryOp::Sub: return hn::Sub(a, b);
    case BinaryOp::Mul: return hn::Mul(a, b);
    case BinaryOp::Div: return hn::Div(a, b);
  }
  return a;
}

void BinaryKernel(BinaryOp op, const float* a, const float* b, float* out, int64_t n) {
  const hn::ScalableTag<float> d;
  map2(d, a, b, out, n, [&](auto va, auto vb) { return apply_binary(d, op, va, vb); });
}

void BinaryScalarKernel(BinaryOp op, const float* a, float b, float* out, int64_t n) {
  const hn::ScalableTag<float> d;
  const auto vb = hn::Set(d, b);
  map1(d, a, out, n, [&](auto va) { return apply_binary(d, op, va, vb); });
}

template <class D, class V>
HWY_INLINE V sigmoid(D d, V x) {
  const auto one = hn::Set(d, 1.0f);
  return hn::Div(one, hn::Add(one, hn::Exp(d, hn::Neg(x))));
}

void UnaryKernel(UnaryOp op, const float* x, float* out, int64_t n, float param) {
  const hn::ScalableTag<float> d;
  switch (op) {
    case UnaryOp::Neg: return map1(d, x, out, n, [&](auto v) { return hn::Neg(v); });
    case UnaryOp::Abs: return map1(d, x, out, n, [&](auto v) { return hn::Abs(v); });
    case UnaryOp::Exp: return map1(d, x, out, n, [&](auto v) { return hn::Exp(d, v); });
    case UnaryOp::Log: return map1(d, x, out, n, [&](auto v) { return hn::Log(d, v); });
    case UnaryOp::Sqrt: return map1(d, x, out, n, [&](auto v) { return hn::Sqrt(v); });
    case UnaryOp::Rsqrt: return map1(d, x, out, n, [&](auto v) { return hn::Div(hn::Set(d, 1.0f), hn::Sqrt(v)); });
    case UnaryOp::Sigmoid: return map1(d, x, out, n, [&](auto v) { return sigmoid(d, v); });
    case UnaryOp::Silu: return map1(d, x, out, n, [&](auto v) { return hn::Mul(v, sigmoid(d, v)); });
    case UnaryOp::Tanh: return map1(d, x, out, n, [&](auto v) { return hn::Tanh(d, v); });
    case UnaryOp::Gelu:
      // tanh approximation: 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3)
      return map1(d, x, out, n, [&](auto v) {
        const auto c0 = hn::Set(d, 0.7978845608028654f * 2.0f);
        const auto c1 = hn::Set(d, 0.044715f);
        auto u2 = hn::Mul(c0, hn::MulAdd(hn::Mul(c1, v), hn::Mul(v, v), v));
        return hn::Mul(v, sigmoid(d, u2));
      });
    case UnaryOp::AddScalar: return map1(d, x, out, n, [&](auto v) { return hn::Add(v, hn::Set(d, param)); });
    case UnaryOp::MulScalar: return map1(d, x, out, n, [&](auto v) { return hn::Mul(v, hn::Set(d, param)); });
    case UnaryOp::Positive:
      return map1(d, x, out, n, [&](auto v) { return hn::IfThenElseZero(hn::Gt(v, hn::Zero(d)), hn::Set(d, 1.0f)); });
    case UnaryOp::ClampMin: return map1(d, x, out, n, [&](auto v) { return hn::Max(v, hn::Set(d, param)); });
    case UnaryOp::Pow:
      // std::pow keeps negative bases with integer exponents exact; pow is rare in hot loops.
      for (int64_t i = 0; i < n; ++i) out[i] = std::pow(x[i], param);
      return;
  }
}

void AxpyKernel(float a, const float* x, float* y, int64_t n) {
  const hn::ScalableTag<float> d;
  const auto va = hn::Set(d, a);
  map2(d, x, y, y, n, [&](auto vx, auto vy) { return hn::MulAdd(va, vx, vy); });
}

float DotKernel(const float* x, const float* y, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  auto acc0 = hn::Zero(d), acc1 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    acc0 = hn::MulAdd(hn::LoadU(d, x + i), hn::LoadU(d, y + i), acc0);
    acc1 = hn::MulAdd(hn::LoadU(d, x + i + N), hn::LoadU(d, y + i + N), acc1);
  }
  for (; i + N <= n; i += N) acc0 = hn::MulAdd(hn::LoadU(d, x + i), hn::LoadU(d, y + i), acc0);
  float s = hn::GetLane(hn::SumOfLanes(d, hn::Add(acc0, acc1)));
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}

}  // namespace HWY_NAMESPACE
}  // namespace smelt
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace smelt {
HWY_EXPORT(BinaryKernel);
HWY_EXPORT(BinaryScalarKernel);
HWY_EXPORT(UnaryKernel);
HWY_EXPORT(AxpyKernel);
HWY_EXPORT(DotKernel);

void cpu_binary(BinaryOp op, const float* a, const float* b, float* out, int64_t n) {
  HWY_DYNAMIC_DISPATCH(BinaryKernel)(op, a, b, out, n);
}
void cpu_binary_scalar(BinaryOp op, const float* a, float b, float* out, int64_t n) {
  HWY_DYNAMIC_DISPATCH(BinaryScalarKernel)(op, a, b, out, n);
}
void cpu_unary(UnaryOp op, const float* x, float* out, int64_t n, float param) {
  HWY_DYNAMIC_DISPATCH(UnaryKernel)(op, x, out, n, param);
}
void cpu_axpy(float a, const float* x, float* y, int64_t n) { HWY_DYNAMIC_DISPATCH(AxpyKernel)(a, x, y, n); }
float cpu_dot(const float* x, const float* y, int64_t n) { return HWY_DYNAMIC_DISPATCH(DotKernel)(x, y, n); }
}  // namespace smelt
#endif
