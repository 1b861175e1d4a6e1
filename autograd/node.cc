#include "autograd/node.h"

#include "autograd/grad_mode.h"

namespace smelt {

namespace {
thread_local bool t_grad_enabled = true;
}

bool grad_enabled() { return t_grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = previous_; }
EnableGradGuard::EnableGradGuard() : previous_(t_grad_enabled) { t_grad_enabled = true; }
EnableGradGuard::~EnableGradGuard() { t_grad_enabled = previous_; }

namespace {

thread_local bool t_saved_in_bf16 = false;
constexpr int64_t kBf16SavedFrom = 4096;  // smaller activations stay f32: no memory worth the two passes

// The bf16 copies made in this thread, so that ops saving the same values share one: keyed by
// the values (storage, offset, shape, strides, version), since each op saves its own view.
struct Bf16Copy {
  std::weak_ptr<Storage> storage;
  int64_t offset;
  Shape shape, strides;
  uint64_t version;
  std::weak_ptr<TensorImpl> copy;
};
thread_local std::vector<Bf16Copy> t_copies;

bool keep_in_bf16(const Tensor& t) {
  return t_saved_in_bf16 && t.defined() && t.dtype() == DType::F32 && !t.device().is_cpu() && t.numel() >= kBf16SavedFrom;
}

Tensor bf16_copy(const Tensor& t) {
  for (const Bf16Copy& c : t_copies)
    if (c.version == t.version() && c.offset == t.offset() && c.shape == t.shape() && c.strides == t.strides() &&
        c.storage.lock() == t.storage())
      if (std::shared_ptr<TensorImpl> copy = c.copy.lock()) return Tensor(copy);
  std::erase_if(t_copies, [](const Bf16Copy& c) { return c.storage.expired() || c.copy.expired(); });
  NoGradGuard no_grad;
  Tensor copy = t.detach().to(DType::BF16);
  t_copies.push_back({t.storage(), t.offset(), t.shape(), t.strides(), t.version(), copy.impl_ptr()});
  return copy;
}

}  // namespace

SavedActivationsInBf16::SavedActivationsInBf16(bool bf16) : previous_(t_saved_in_bf16) { t_saved_in_bf16 = bf16; }
SavedActivationsInBf16::~SavedActivationsInBf16() { t_saved_in_bf16 = previous_; }

SavedTensor::SavedTensor(const Tensor& t, const char* op, bool activation)
    : tensor_(t), version_(t.defined() ? t.version() : 0), op_(op) {
  if (!activation || !keep_in_bf16(t)) return;
  original_ = t.storage();
  tensor_ = bf16_copy(t);
  widen_ = true;
}

Tensor SavedTensor::get() const {
  if (!widen_) {
    SMELT_CHECK(!tensor_.defined() || tensor_.version() == version_, "a tensor ", tensor_.str(), " saved for the backward of '", op_,
                "' was modified in place (version ", version_, " → ", tensor_.version(), "); clone it before the in-place write");
    return tensor_;
  }
  // A bf16 copy is a snapshot, but an in-place write to the values it was taken from (while
  // they live) is the same user error as above.
  if (const std::shared_ptr<Storage> original = original_.lock())
    SMELT_CHECK(original->version() == version_, "a tensor ", tensor_.str(), " saved (in bf16) for the backward of '", op_,
                "' was modified in place (version ", version_, " → ", original->version(), "); clone it before the in-place write");
  NoGradGuard no_grad;
  return tensor_.to(DType::F32);
}

std::vector<Tensor> FunctionNode::backward(const Tensor& g) {
  SMELT_CHECK(fn_ != nullptr, "backward through '", name_, "' a second time: its saved tensors were already freed");
  return fn_(g);
}

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void attach_grad_fn(const Tensor& out, const char* name, const std::vector<Tensor>& inputs, FunctionNode::BackwardFn fn) {
  auto node = std::make_shared<FunctionNode>(name, std::move(fn));
  node->next.reserve(inputs.size());
  for (const Tensor& in : inputs) {
    Edge e;
    if (in.defined() && in.requires_grad()) {
      if (in.grad_fn()) e.fn = in.grad_fn();
      else e.leaf = in.impl_ptr();
    }
    node->next.push_back(e);
  }
  node->output_shape = out.shape();
  out.set_grad_fn(node);
  out.impl()->requires_grad = true;
}

}  // namespace smelt
