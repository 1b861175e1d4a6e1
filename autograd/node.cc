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

SavedTensor::SavedTensor(const Tensor& t, const char* op) : tensor_(t), version_(t.defined() ? t.version() : 0), op_(op) {}

const Tensor& SavedTensor::get() const {
  SMELT_CHECK(!tensor_.defined() || tensor_.version() == version_, "a tensor ", tensor_.str(), " saved for the backward of '",
              op_, "' was modified in place (version ", version_, " → ", tensor_.version(),
              "); clone it before the in-place write");
  return tensor_;
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
