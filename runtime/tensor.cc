#include "runtime/tensor.h"

#include <cstring>
#include <sstream>

#include "runtime/rng.h"
#include "runtime/strided.h"

namespace smelt {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = static_cast<int64_t>(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

// ---------------------------------------------------------------- factories

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) SMELT_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(impl);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.raw_data(), 0, t.numel() * dtype_size(dtype));
  return t;
}

Tensor Tensor::full(const Shape& shape, float value, DType dtype) {
  Tensor t = empty(shape, dtype);
  t.fill_(value);
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape) {
  SMELT_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
              " values for shape ", shape_str(shape));
  Tensor t = empty(shape);
  std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(float));
  return t;
}

Tensor Tensor::from_ints(const std::vector<int64_t>& values, const Shape& shape, DType dtype) {
  SMELT_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_ints: ", values.size(),
              " values for shape ", shape_str(shape));
  SMELT_CHECK(dtype == DType::I64 || dtype == DType::I32, "from_ints needs i32 or i64, got ", dtype_name(dtype));
  Tensor t = empty(shape, dtype);
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::I64) t.data<int64_t>()[i] = values[i];
    else t.data<int32_t>()[i] = static_cast<int32_t>(values[i]);
  }
  return t;
}

Tensor Tensor::arange(int64_t n, DType dtype) {
  std::vector<int64_t> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = i;
  return from_ints(v, {n}, dtype);
}

Tensor Tensor::randn(const Shape& shape, Philox& rng, float mean, float std) {
  Tensor t = empty(shape);
  float* p = t.data<float>();
  rng.fill_normal(p, t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = mean + std * p[i];
  return t;
}

Tensor Tensor::uniform(const Shape& shape, Philox& rng, float lo, float hi) {
  Tensor t = empty(shape);
  float* p = t.data<float>();
  rng.fill_uniform(p, t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = lo + (hi - lo) * p[i];
  return t;
}

Tensor Tensor::view_of(std::shared_ptr<Storage> storage, const Shape& shape, const Shape& strides, int64_t offset, DType dtype) {
  SMELT_ASSERT(shape.size() == strides.size());
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = dtype;
  return Tensor(impl);
}

// ---------------------------------------------------------------- metadata

namespace {
const std::shared_ptr<TensorImpl>& checked(const std::shared_ptr<TensorImpl>& impl) {
  SMELT_CHECK(impl != nullptr, "use of an undefined tensor");
  return impl;
}
}  // namespace
#define SMELT_IMPL() checked(impl_)

const Shape& Tensor::shape() const { return SMELT_IMPL()->shape; }
const Shape& Tensor::strides() const { return SMELT_IMPL()->strides; }
int64_t Tensor::offset() const { return SMELT_IMPL()->offset; }
DType Tensor::dtype() const { return SMELT_IMPL()->dtype; }
Device Tensor::device() const { return SMELT_IMPL()->storage->device(); }
const std::shared_ptr<Storage>& Tensor::storage() const { return SMELT_IMPL()->storage; }
int64_t Tensor::numel() const { return shape_numel(shape()); }

int64_t Tensor::size(int64_t d) const {
  int64_t nd = dim();
  int64_t dd = d < 0 ? d + nd : d;
  SMELT_CHECK(dd >= 0 && dd < nd, "dimension ", d, " out of range for ", str());
  return shape()[dd];
}

bool Tensor::is_contiguous() const {
  const Shape& sh = shape();
  const Shape& st = strides();
  int64_t acc = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (sh[i] != 1 && st[i] != acc) return false;
    acc *= sh[i];
  }
  return true;
}

std::string Tensor::str() const {
  if (!impl_) return "undefined";
  return std::string(dtype_name(dtype())) + shape_str(shape());
}

void* Tensor::raw_data() const {
  SMELT_CHECK(device().type == DeviceType::CPU, "host access to a tensor on ", device().str());
  return static_cast<char*>(storage()->data()) + offset() * static_cast<int64_t>(dtype_size(dtype()));
}

// ---------------------------------------------------------------- element conversion

namespace {

float load_as_float(const void* base, int64_t i, DType t) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(base)[i];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(base)[i]);
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(base)[i]);
    case DType::I32: return static_cast<float>(static_cast<const int32_t*>(base)[i]);
    case DType::I64: return static_cast<float>(static_cast<const int64_t*>(base)[i]);
    case DType::U8: case DType::Bool: return static_cast<float>(static_cast<const uint8_t*>(base)[i]);
  }
  return 0;
}

int64_t load_as_int(const void* base, int64_t i, DType t) {
  switch (t) {
    case DType::I32: return static_cast<const int32_t*>(base)[i];
    case DType::I64: return static_cast<const int64_t*>(base)[i];
    case DType::U8: case DType::Bool: return static_cast<const uint8_t*>(base)[i];
    default: return static_cast<int64_t>(load_as_float(base, i, t));
  }
}

void store_from(void* base, int64_t i, DType t, double v, int64_t iv, bool is_int) {
  switch (t) {
    case DType::F32: static_cast<float*>(base)[i] = static_cast<float>(v); break;
    case DType::BF16: static_cast<uint16_t*>(base)[i] = f32_to_bf16(static_cast<float>(v)); break;
    case DType::F16: static_cast<uint16_t*>(base)[i] = f32_to_f16(static_cast<float>(v)); break;
    case DType::I32: static_cast<int32_t*>(base)[i] = static_cast<int32_t>(is_int ? iv : static_cast<int64_t>(v)); break;
    case DType::I64: static_cast<int64_t*>(base)[i] = is_int ? iv : static_cast<int64_t>(v); break;
    case DType::U8: static_cast<uint8_t*>(base)[i] = static_cast<uint8_t>(is_int ? iv : static_cast<int64_t>(v)); break;
    case DType::Bool: static_cast<uint8_t*>(base)[i] = (is_int ? iv != 0 : v != 0.0) ? 1 : 0; break;
  }
}

bool is_integral(DType t) { return !is_floating(t); }

}  // namespace

void Tensor::copy_from(const Tensor& src) const {
  SMELT_CHECK(src.defined(), "copy_from an undefined tensor");
  const Shape& out = shape();
  Shape src_strides = broadcast_strides(src, out);
  const Shape& dst_strides = strides();
  char* dbase = static_cast<char*>(storage()->data());
  const char* sbase = static_cast<const char*>(src.storage()->data());
  DType dt = dtype(), st = src.dtype();
  size_t dsz = dtype_size(dt), ssz = dtype_size(st);
  bool int_path = is_integral(dt) && is_integral(st);
  for_each_row<2>(out, {&dst_strides, &src_strides}, {offset(), src.offset()}, [&](const std::array<int64_t, 2>& off, int64_t n) {
    int64_t ds = dst_strides.empty() ? 1 : dst_strides.back();
    int64_t ss = src_strides.empty() ? 1 : src_strides.back();
    void* d = dbase + off[0] * dsz;
    const void* s = sbase + off[1] * ssz;
    if (dt == st && ds == 1 && ss == 1) {
      std::memmove(d, s, n * dsz);
      return;
    }
    for (int64_t i = 0; i < n; ++i) {
      if (int_path) store_from(d, i * ds, dt, 0, load_as_int(s, i * ss, st), true);
      else store_from(d, i * ds, dt, load_as_float(s, i * ss, st), 0, false);
    }
  });
  bump_version();
}

void Tensor::fill_(float v) const {
  Tensor src = Tensor::empty({}, DType::F32);
  *src.data<float>() = v;
  copy_from(src);
}

float Tensor::item() const {
  SMELT_CHECK(numel() == 1, "item() of ", str(), " which has ", numel(), " elements");
  return load_as_float(raw_data(), 0, dtype());
}

std::vector<float> Tensor::to_vector() const {
  Tensor c = to(DType::F32);
  if (!c.is_contiguous() || c.same(*this)) c = c.clone();
  const float* p = c.data<float>();
  return std::vector<float>(p, p + c.numel());
}

std::vector<int64_t> Tensor::to_int_vector() const {
  Tensor c = Tensor::empty(shape(), DType::I64);
  c.copy_from(*this);
  const int64_t* p = c.data<int64_t>();
  return std::vector<int64_t>(p, p + c.numel());
}

Tensor Tensor::to(DType t) const {
  if (t == dtype()) return *this;
  Tensor out = empty(shape(), t);
  out.copy_from(*this);
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype());
  out.copy_from(*this);
  return out;
}

Tensor Tensor::detach() const {
  return view_of(storage(), shape(), strides(), offset(), dtype());
}

// ---------------------------------------------------------------- autograd slots

bool Tensor::requires_grad() const { return impl_ && impl_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool on) {
  SMELT_CHECK(!on || is_floating(dtype()), "only floating tensors can require grad, got ", str());
  SMELT_IMPL()->requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return Tensor(SMELT_IMPL()->grad); }
void Tensor::set_grad(const Tensor& g) const { SMELT_IMPL()->grad = g.impl_ptr(); }
const std::shared_ptr<Node>& Tensor::grad_fn() const { return SMELT_IMPL()->grad_fn; }
void Tensor::set_grad_fn(std::shared_ptr<Node> fn) const { SMELT_IMPL()->grad_fn = std::move(fn); }

}  // namespace smelt
