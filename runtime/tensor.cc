#include "runtime/tensor.h"

#include <cstring>
#include <sstream>

#include "runtime/device_backend.h"
#include "runtime/quant.h"
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
  SMELT_CHECK(!is_quantized(dtype) || (!shape.empty() && shape.back() % dtype_block_values(dtype) == 0), dtype_name(dtype), " tensor ",
              shape_str(shape), ": its rows (last dimension) must be whole blocks of ", dtype_block_values(dtype), " values");
  SMELT_CHECK(!is_interleaved(dtype) || (shape.size() >= 2 && shape[shape.size() - 2] % kX8Rows == 0), dtype_name(dtype), " tensor ",
              shape_str(shape), ": its row count must be a multiple of ", kX8Rows);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(dtype_bytes(dtype, shape_numel(shape)), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(impl);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  device_backend(device).fill(t, 0.0);
  return t;
}

Tensor Tensor::full(const Shape& shape, float value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  device_backend(device).fill(t, value);
  return t;
}

namespace {
// A contiguous host tensor moved onto `device` (itself when that is the CPU).
Tensor onto(const Tensor& host, Device device) { return device.is_cpu() ? host : host.to(device); }
}  // namespace

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape, Device device) {
  SMELT_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
              " values for shape ", shape_str(shape));
  Tensor t = empty(shape);
  std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(float));
  return onto(t, device);
}

Tensor Tensor::from_ints(const std::vector<int64_t>& values, const Shape& shape, DType dtype, Device device) {
  SMELT_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_ints: ", values.size(),
              " values for shape ", shape_str(shape));
  SMELT_CHECK(dtype == DType::I64 || dtype == DType::I32, "from_ints needs i32 or i64, got ", dtype_name(dtype));
  Tensor t = empty(shape, dtype);
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::I64) t.data<int64_t>()[i] = values[i];
    else t.data<int32_t>()[i] = static_cast<int32_t>(values[i]);
  }
  return onto(t, device);
}

Tensor Tensor::arange(int64_t n, DType dtype, Device device) {
  std::vector<int64_t> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = i;
  return from_ints(v, {n}, dtype, device);
}

Tensor Tensor::randn(const Shape& shape, Philox& rng, float mean, float std, Device device) {
  Tensor t = empty(shape);
  float* p = t.data<float>();
  rng.fill_normal(p, t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = mean + std * p[i];
  return onto(t, device);
}

Tensor Tensor::uniform(const Shape& shape, Philox& rng, float lo, float hi, Device device) {
  Tensor t = empty(shape);
  float* p = t.data<float>();
  rng.fill_uniform(p, t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = lo + (hi - lo) * p[i];
  return onto(t, device);
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
  SMELT_CHECK(device().is_cpu(), "host access to tensor ", str(), " on ", device().str(),
              " (bring it over with .to(Device::cpu()))");
  return device_data();
}

void* Tensor::device_data() const {
  return static_cast<char*>(storage()->data()) + dtype_bytes(dtype(), offset());
}

// ---------------------------------------------------------------- copies

namespace {
// dst ← src, both contiguous with equal byte counts, on any two devices.
void transfer_bytes(const Tensor& dst, const Tensor& src) {
  const size_t bytes = dtype_bytes(src.dtype(), src.numel());
  const Device from = src.device(), to = dst.device();
  if (from.is_cpu()) return device_backend(to).copy_from_host(dst.device_data(), src.device_data(), bytes, to.index);
  if (to.is_cpu()) return device_backend(from).copy_to_host(dst.device_data(), src.device_data(), bytes, from.index);
  std::vector<char> staging(bytes);
  device_backend(from).copy_to_host(staging.data(), src.device_data(), bytes, from.index);
  device_backend(to).copy_from_host(dst.device_data(), staging.data(), bytes, to.index);
}
}  // namespace

void Tensor::copy_from(const Tensor& src) const {
  SMELT_CHECK(src.defined(), "copy_from an undefined tensor");
  SMELT_CHECK(defined(), "copy_from into an undefined tensor");
  if (src.device() == device()) {
    device_backend(device()).copy(*this, src);
  } else {
    // Across devices only contiguous bytes move: src is packed on its own device, moved, then
    // broadcast and converted by this device's copy.
    const Tensor packed = src.is_contiguous() ? src : src.clone();
    const Tensor here = Tensor::empty(src.shape(), src.dtype(), device());
    transfer_bytes(here, packed);
    device_backend(device()).copy(*this, here);
  }
  bump_version();
}

void Tensor::fill_(float v) const {
  device_backend(device()).fill(*this, v);
  bump_version();
}

namespace {
// This tensor's values on the host, contiguous, as `dtype`: the one path of every host read.
Tensor host_copy(const Tensor& t, DType dtype) {
  count_host_read();
  device_backend(t.device()).synchronize(t.device().index);
  Tensor out = Tensor::empty(t.shape(), dtype);
  out.copy_from(t);
  return out;
}
}  // namespace

float Tensor::item() const {
  SMELT_CHECK(numel() == 1, "item() of ", str(), " which has ", numel(), " elements");
  return *host_copy(*this, DType::F32).data<float>();
}

std::vector<float> Tensor::to_vector() const {
  const Tensor c = host_copy(*this, DType::F32);
  const float* p = c.data<float>();
  return std::vector<float>(p, p + c.numel());
}

std::vector<int64_t> Tensor::to_int_vector() const {
  const Tensor c = host_copy(*this, DType::I64);
  const int64_t* p = c.data<int64_t>();
  return std::vector<int64_t>(p, p + c.numel());
}

Tensor Tensor::to(DType t) const {
  if (t == dtype()) return *this;
  Tensor out = empty(shape(), t, device());
  out.copy_from(*this);
  return out;
}

Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  Tensor out = empty(shape(), dtype(), d);
  out.copy_from(*this);
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
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
