// Tensor: a cheap handle (shared impl) to storage + view metadata + an optional gradient slot.
// Views (reshape of contiguous data, permute, slice, expand) share storage and never copy.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/device.h"
#include "runtime/dtype.h"
#include "runtime/error.h"
#include "runtime/storage.h"

namespace smelt {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);

class Node;
class Philox;
struct TensorImpl;

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories: on the CPU unless a device is given ----
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, float value, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, Device device = Device::cpu()) { return full(shape, 1.0f, DType::F32, device); }
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape, Device device = Device::cpu());
  static Tensor from_ints(const std::vector<int64_t>& values, const Shape& shape, DType dtype = DType::I64,
                          Device device = Device::cpu());
  static Tensor scalar(float v, Device device = Device::cpu()) { return from_vector({v}, {}, device); }
  static Tensor arange(int64_t n, DType dtype = DType::I64, Device device = Device::cpu());
  // Gaussian N(mean, std^2) and uniform [lo, hi) draws from a Philox stream: the same numbers on
  // every device (drawn on the host, then copied).
  static Tensor randn(const Shape& shape, Philox& rng, float mean = 0.0f, float std = 1.0f, Device device = Device::cpu());
  static Tensor uniform(const Shape& shape, Philox& rng, float lo, float hi, Device device = Device::cpu());
  // A view over existing storage.
  static Tensor view_of(std::shared_ptr<Storage> storage, const Shape& shape, const Shape& strides, int64_t offset, DType dtype);

  // ---- metadata ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  const Shape& strides() const;
  int64_t offset() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const;
  std::string str() const;  // "f32[2, 3]"

  // ---- data access ----
  // Pointer to the first element of this view, for CPU tensors only (throws for other devices).
  template <typename T> T* data() const;
  void* raw_data() const;
  // The first element's address in the tensor's own device memory: for backends, which know
  // how to reach it. Never dereference it outside the backend of device().
  void* device_data() const;
  // The synchronising reads: each waits for the device, copies to the host and counts one host
  // read (runtime/device_backend.h). Nothing else brings a device's values to the caller.
  float item() const;                    // one-element tensor as float
  std::vector<float> to_vector() const;  // any dtype/layout → row-major floats
  std::vector<int64_t> to_int_vector() const;

  // ---- conversions (no autograd); results stay on this tensor's device unless one is given ----
  Tensor to(DType dtype) const;    // converting copy (or this tensor if the dtype already matches)
  Tensor to(Device device) const;  // copy onto `device` (or this tensor if already there)
  Tensor clone() const;            // contiguous copy, same dtype, detached
  Tensor detach() const;           // same storage, no autograd history

  // ---- autograd ----
  bool requires_grad() const;
  Tensor& set_requires_grad(bool on);
  Tensor grad() const;
  void set_grad(const Tensor& g) const;
  const std::shared_ptr<Node>& grad_fn() const;
  void set_grad_fn(std::shared_ptr<Node> fn) const;
  bool is_leaf() const { return grad_fn() == nullptr; }
  // Runs the backward engine from this (scalar, unless `grad` is given) tensor.
  void backward(const Tensor& grad = Tensor()) const;

  // ---- in-place (bumps the version counter) ----
  uint64_t version() const { return storage()->version(); }
  void bump_version() const { storage()->bump_version(); }
  // Elementwise copy with broadcasting, any layouts, converting the dtype; src may be on another
  // device (it is staged through the host when neither side is the CPU).
  void copy_from(const Tensor& src) const;
  void fill_(float v) const;

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }
  // True when this handle is the only one to this tensor and no other view shares its storage:
  // a backward may then overwrite it in place (it is about to be freed anyway).
  bool is_sole_reference() const { return impl_.use_count() == 1 && storage().use_count() == 1; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;  // in elements
  int64_t offset = 0;  // in elements
  DType dtype = DType::F32;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<Node> grad_fn;
};

template <typename T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::F32; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::I32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::I64; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::U8; };
template <> struct dtype_of<uint16_t> { static constexpr DType value = DType::BF16; };  // raw 16-bit access

template <typename T>
T* Tensor::data() const {
  SMELT_CHECK(defined(), "data() of an undefined tensor");
  DType want = dtype_of<T>::value;
  // Raw bytes (uint8_t) of a bool or block-quantised tensor too.
  bool ok = dtype() == want || (want == DType::BF16 && dtype() == DType::F16) ||
            (want == DType::U8 && (dtype() == DType::Bool || is_quantized(dtype())));
  SMELT_CHECK(ok, "tensor ", str(), " accessed as ", dtype_name(want));
  return static_cast<T*>(raw_data());
}

}  // namespace smelt
